"""The Windows lane's real parts: a site server, a distribution point, agent processes.

Everything runs on Windows CPython (under Wine on Linux, see scripts/test-windows): the site
server and every agent are processes of their own on 127.0.0.1, the distribution point is an
aiohttp server on a thread of the test process, and packages are made and published with the
``p2pdist create`` and ``p2pdist publish`` commands, as an administrator would (in this process:
the demo test runs them as processes of their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from p2pdist.control.client import ControlClient

from p2pdist.control.schema import AgentUnavailable, PackageStatus
from p2pdist.agent.winstop import request_stop
from p2pdist.config import toml_value
from p2pdist.metainfo import signing
from tests.support.ports import free_port

PYTHON = sys.executable
WINE = hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")
NO_WINDOW = subprocess.CREATE_NO_WINDOW


# Wine 8's CreateProcess fails now and then with ERROR_INTERNAL_ERROR before any child exists
# (seen once in many lane runs, starting the wrapper); Windows has no such failure. Starting
# again is safe because nothing ran: the one place the lane retries it.
ERROR_INTERNAL_ERROR = 1359


def popen(args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen``, started once more when Wine's CreateProcess fails as above."""
    try:
        return subprocess.Popen(args, **kwargs)
    except OSError as exc:
        if not (WINE and getattr(exc, "winerror", None) == ERROR_INTERNAL_ERROR):
            raise
        print(f"lane: Wine's CreateProcess failed ({exc}); starting {args!r} once more", file=sys.stderr)
        return subprocess.Popen(args, **kwargs)


def run(args: Any, *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` (output captured, no stdin) through ``popen``."""
    with popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def wait_for(condition: Any, what: str, timeout: float = 60.0, step: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns something true; a generous ceiling catches hangs."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 2):
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def p2pdist_here(*args: str) -> str:
    """``p2pdist ARGS`` in this process, its stdout; AssertionError unless it exits 0. Where the
    subject is the command and not its process start, which is the lane's dearest step under Wine."""
    from p2pdist.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    assert code == 0, f"p2pdist {args[0]} exited {code}: {out.getvalue()}"
    return out.getvalue()


class DistributionPoint:
    """A DP share served over HTTP with range requests (the web seed).

    ``bytes_sent`` counts what really went out, chunk by chunk, so a download cut short counts
    only what it got; ``rate`` (bytes/s, 0 = unlimited) slows it down.
    """

    CHUNK = 64 * 1024

    def __init__(self, share: Path) -> None:
        self.share = share
        self.bytes_sent = 0
        self.rate = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dp", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.+}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/"

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = (self.share / request.match_info["path"]).resolve()
        if self.share.resolve() not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        data = path.read_bytes()
        first, last = 0, len(data) - 1
        ranged = request.http_range
        if ranged.start is not None or ranged.stop is not None:
            first = ranged.start or 0
            last = min(len(data), ranged.stop if ranged.stop is not None else len(data)) - 1
        response = web.StreamResponse(status=206 if request.headers.get("Range") else 200)
        response.content_length = last - first + 1
        if request.headers.get("Range"):
            response.headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        await response.prepare(request)
        for offset in range(first, last + 1, self.CHUNK):
            chunk = data[offset : min(offset + self.CHUNK, last + 1)]
            await response.write(chunk)
            self.bytes_sent += len(chunk)
            if self.rate:
                await asyncio.sleep(len(chunk) / self.rate)
        await response.write_eof()
        return response

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


@dataclass
class Site:
    """The site server process, its signing key and admin token, and the DP beside it."""

    work: Path
    dp: DistributionPoint
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    key_hex: str = ""

    @property
    def key_file(self) -> Path:
        return self.work / "repository.key"

    @property
    def token_file(self) -> Path:
        return self.work / "admin.token"

    def start(self) -> None:
        key = signing.generate_key()
        signing.write_private_key(key, self.key_file)
        self.key_hex = signing.raw_public_key(key.public_key()).hex()
        self.token_file.write_text(os.urandom(16).hex())
        port = free_port()
        config = self.work / "site.toml"
        config.write_text(
            f"data_dir = {toml_value(self.work / 'server')}\n"
            f"admin_token_file = {toml_value(self.token_file)}\n"
            f"public_keys = [{toml_value(self.key_hex)}]\n"
            f'[listen]\nhost = "127.0.0.1"\nport = {port}\n'
            "[tracker]\ninterval = 15\nmin_interval = 5\npeer_expiry = 60\n"
            '[[sites]]\nname = "HQ"\nsubnets = ["127.0.0.0/8"]\n'
        )
        log = open(self.work / "server.out", "wb")
        self.process = popen(
            [PYTHON, "-m", "p2pdist.tracker", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, creationflags=NO_WINDOW,
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"

        def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, (self.work / "server.out").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
            return False

        wait_for(listening, "the site server")

    def publish(self, package_id: str, files: dict[str, bytes], *, version: int = 1) -> Path:
        """Put ``files`` on the DP share as ``package_id`` and publish a signed torrent for it."""
        folder = self.dp.share / package_id
        for name, data in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        torrent = self.work / f"{package_id}.torrent"
        p2pdist_here(
            "create", str(folder), "-o", str(torrent), "--pkg", package_id, "--version", str(version), "-f",
            "-t", f"{self.url}/announce", "-w", self.dp.url, "--sign-key", str(self.key_file), "--piece-size", "64K",
        )
        p2pdist_here("publish", str(torrent), "--server", self.url, "--token-file", str(self.token_file))
        return folder

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@dataclass
class AgentProcess:
    """One agent: its home folder, agent.toml, process, and control API on loopback TCP."""

    home: Path
    site: Site
    extra: str = ""  # more top-level settings, TOML lines
    engine: str = ""  # more [engine] settings, TOML lines
    process: subprocess.Popen[bytes] | None = None
    control: str = ""
    runs: list[int] = field(default_factory=list)  # exit codes of earlier runs

    @property
    def token_file(self) -> Path:
        return self.home / "state" / "control.token"

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def log(self) -> Path:
        return self.home / "agent.log"

    def write_config(self) -> Path:
        self.control = f"http://127.0.0.1:{free_port()}"
        config = self.home / "agent.toml"
        self.home.mkdir(parents=True, exist_ok=True)
        config.write_text(
            f"repository = {toml_value(self.site.url)}\n"
            f"public_keys = [{toml_value(self.site.key_hex)}]\n"
            f"cache_dir = {toml_value(self.cache)}\n"
            f"state_dir = {toml_value(self.home / 'state')}\n"
            f"log_file = {toml_value(self.log)}\n"
            "web_seed_grace = 0.5\nreport_interval = 5.0\nretry_interval = 1.0\nflush_interval = 1.0\n"
            f"{self.extra}"
            "[engine]\n"
            f"{self.engine}"
            f'listen_host = "127.0.0.1"\nlisten_port = {free_port()}\nbind_host = "127.0.0.1"\n'
            "tick_interval = 0.5\n"
            f"[control]\naddress = {toml_value(self.control)}\n"
        )
        return config

    def start(self) -> None:
        config = self.write_config()
        out = open(self.home / "agent.out", "ab")
        self.process = popen(
            [PYTHON, "-m", "p2pdist.agent", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, creationflags=NO_WINDOW,
        )
        out.close()
        wait_for(self._answers, "the agent's control API")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the agent exited {self.process.returncode}: {self.output()}")
        try:
            self.call("list")
        except AgentUnavailable:
            return False
        return True

    def output(self) -> str:
        return (self.home / "agent.out").read_text(errors="replace")

    def call(self, method: str, *args: Any) -> Any:
        async def go() -> Any:
            async with ControlClient(self.control, token_file=self.token_file, timeout=10.0) as client:
                return await getattr(client, method)(*args)

        return asyncio.run(go())

    def wait_complete(self, package_id: str, timeout: float = 90.0, *, errors: bool = False) -> PackageStatus:
        """Ensure until complete; an error state fails at once unless ``errors`` (a retry is due)."""

        def complete() -> PackageStatus | None:
            status = self.call("ensure", package_id)
            assert errors or status.state != "error", status
            return status if status.state == "complete" else None

        return wait_for(complete, f"{package_id} to complete", timeout=timeout, step=0.3)

    def stop(self) -> int:
        """Stop through the stop event (a graceful stop, as a service stop is); the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            assert request_stop(self.process.pid), "the agent has no stop event"
            code = self.process.wait(timeout=60)
        else:
            code = self.process.returncode
        self.runs.append(code)
        return code

    def kill(self) -> None:
        """TerminateProcess: what a crash or a power cut leaves behind."""
        assert self.process is not None
        self.process.kill()
        self.runs.append(self.process.wait(timeout=30))


@contextlib.contextmanager
def running_agent(home: Path, site: Site, extra: str = "", engine: str = "") -> Iterator[AgentProcess]:
    agent = AgentProcess(home, site, extra, engine)
    agent.start()
    try:
        yield agent
    finally:
        if agent.process is not None and agent.process.poll() is None:
            with contextlib.suppress(Exception):
                agent.stop()
            if agent.process.poll() is None:
                agent.kill()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
