"""Child processes of a run: started inside a namespace, logged to a file, always stopped.

Every process the harness starts is registered here, so one ``stop_all()`` (from the
approach's ``finally``, from ``atexit``, from a signal) ends each of them by its own pid: SIGTERM
first (agents announce ``stopped`` and save their state), SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any


class Proc:
    """One child, its stdout either in a log file or read as JSON lines."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        if process.stdout is not None:
            self._reader = asyncio.ensure_future(self._read())

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU time so far (None once it has exited): who loaded the shared cores."""
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                fields = handle.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        with open(self.log, "ab") as log:
            while line := await self.process.stdout.readline():
                log.write(line)
                log.flush()
                with contextlib.suppress(ValueError):
                    value = json.loads(line)
                    if isinstance(value, dict):
                        self.lines.put_nowait(value)

    async def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next JSON line that has ``key``; TimeoutError, or RuntimeError if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no '{key}' within {timeout:g} s (log {self.log})")
            try:
                value = await asyncio.wait_for(self.lines.get(), min(left, 0.5))
            except asyncio.TimeoutError:
                if self.process.returncode is not None and self.lines.empty():
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode} (log {self.log})") from None
                continue
            if key in value:
                return value

    def send(self, text: str) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(text.encode())


class Procs:
    def __init__(self, logs: Path, cwd: Path) -> None:
        self.logs = logs
        self.cwd = cwd  # not the source tree: ``python -m`` puts the cwd first on sys.path
        self.running: list[Proc] = []

    async def spawn(
        self, name: str, argv: list[str], *, pipe: bool = False, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Proc:
        """Start ``argv``; with ``pipe`` its stdin/stdout are pipes (JSON lines), else stdout goes to the log."""
        log = self.logs / f"{name}.out"
        cwd = cwd or self.cwd
        if pipe:
            with open(log.with_suffix(".err"), "wb") as errors:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=errors, cwd=cwd, env=env
                )
        else:
            with open(log, "wb") as handle:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=handle, stderr=asyncio.subprocess.STDOUT, cwd=cwd, env=env
                )
        proc = Proc(name, process, log)
        self.running.append(proc)
        return proc

    async def stop(self, procs: list[Proc], grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL for those still there after ``grace`` seconds; reaps them."""
        for proc in procs:
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(proc.process.wait()) for proc in procs]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace)
            for proc in procs:
                if proc.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.process.kill()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
        for proc in procs:
            if proc._reader is not None:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(proc._reader, 2.0)
            if proc in self.running:
                self.running.remove(proc)

    async def stop_all(self) -> None:
        await self.stop(list(self.running))

    def kill_all_now(self) -> None:
        """Synchronous last resort (atexit): SIGKILL every child still registered, by pid."""
        for proc in self.running:
            if proc.process.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(proc.pid, signal.SIGKILL)
        self.running.clear()
