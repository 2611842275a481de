"""The wrapper end to end against a control API on a real Unix socket, with real child installers.

The server here is a stand-in for the agent's control server, written when that server was not
built yet: a small aiohttp application implementing the endpoints of docs/control-api.md that
the wrapper uses (ensure, status, verify, leases). It stays because its knobs put the wrapper in
situations the real agent cannot be driven into on demand (a hung agent, a lease refused after
verify, progress in exact steps). The client side is the real ``p2pdist.control.client``;
test_wrapper_agent.py runs the wrapper against the real agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from p2pdist.wrapper.__main__ import invoke
from p2pdist.wrapper.exitcodes import EXIT_INTERNAL, EXIT_NO_PACKAGE, EXIT_NOT_FOUND, EXIT_USAGE
from p2pdist.wrapper.gate import Timing
from p2pdist.wrapper.smsim import simulate
from tests.support.wrapper import INSTALLER, make_executable

FAST = Timing(quick=2.0, poll=0.05, stall=2.0)
PKG = "PS100012"


class StandInAgent:
    """The documented control endpoints the wrapper uses, served from a thread on a Unix socket."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.packages: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.leases: dict[str, tuple[str, int]] = {}
        self.acquired: list[tuple[str, int]] = []
        self.released: list[str] = []
        self.most_leases = 0
        self.delay = 0.0
        self.step_on_ensure = 0.0  # progress added by each ensure: SMS retries until complete
        self.step_on_status = 0.0  # progress added by each status poll: --wait
        self.damaged = False  # verify finds a bad piece
        self.lease_conflict = False  # the package changed between verify and lease
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    def add(self, package_id: str, *, path: Path | str | None, progress: float = 1.0, **fields: Any) -> None:
        complete = progress >= 1.0
        self.packages[package_id] = {
            "package_id": package_id, "version": 3, "info_hash": "ab" * 20, "name": package_id,
            "state": "complete" if complete else "downloading", "progress": progress, "size": 50 * 2**20,
            "bytes_from_peers": 0, "bytes_from_webseed": 0, "peers": 2, "path": str(path) if complete else None,
            "final_path": str(path) if path is not None else None, "error": None, "tracker_error": None,
            **fields,
        }  # fmt: skip

    # ------------------------------------------------------------ handlers

    def _advance(self, package: dict[str, Any], step: float) -> None:
        if step and package["state"] != "complete":
            package["progress"] = min(1.0, package["progress"] + step)
            package["bytes_from_peers"] = int(package["progress"] * package["size"])
            if package["progress"] >= 1.0:
                package.update(state="complete", path=package["final_path"])

    def _public(self, package: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in package.items() if k != "final_path"}

    async def _package(self, request: web.Request, what: str) -> dict[str, Any]:
        package_id = request.match_info["pkg"]
        self.calls.append((what, package_id))
        if self.delay:  # a hung agent; ends early when the server stops
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay)
        if package_id not in self.packages:
            raise web.HTTPNotFound(text=json.dumps({"error": f"{package_id} is not in the repository"}),
                                   content_type="application/json")  # fmt: skip
        return self.packages[package_id]

    async def ensure(self, request: web.Request) -> web.Response:
        package = await self._package(request, "ensure")
        self._advance(package, self.step_on_ensure)
        return web.json_response(self._public(package))

    async def status(self, request: web.Request) -> web.Response:
        package = await self._package(request, "status")
        self._advance(package, self.step_on_status)
        return web.json_response(self._public(package))

    async def verify(self, request: web.Request) -> web.Response:
        package = await self._package(request, "verify")
        if self.damaged:
            package.update(state="downloading", progress=0.96, path=None)
        return web.json_response(self._public(package))

    async def acquire(self, request: web.Request) -> web.Response:
        package = await self._package(request, "lease")
        if self.lease_conflict or package["state"] != "complete":
            return web.json_response({"error": "package is not complete"}, status=409)
        pid = (await request.json())["pid"]
        lease = uuid.uuid4().hex
        self.leases[lease] = (package["package_id"], pid)
        self.acquired.append((package["package_id"], pid))
        self.most_leases = max(self.most_leases, len(self.leases))
        return web.json_response({"lease": lease})

    async def release(self, request: web.Request) -> web.Response:
        lease = request.match_info["lease"]
        self.calls.append(("release", lease))
        if self.leases.pop(lease, None) is None:
            return web.json_response({"error": "no such lease"}, status=404)
        self.released.append(lease)
        return web.Response(status=204)

    # ------------------------------------------------------------ life

    def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/packages/{pkg}/ensure", self.ensure)
        app.router.add_get("/v1/packages/{pkg}", self.status)
        app.router.add_post("/v1/packages/{pkg}/verify", self.verify)
        app.router.add_post("/v1/packages/{pkg}/leases", self.acquire)
        app.router.add_delete("/v1/leases/{lease}", self.release)
        self._thread.start()

        async def serve() -> None:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.UnixSite(self._runner, str(self.socket_path)).start()

        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopping.set)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for sockets (AF_UNIX paths are limited to about 100 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="p2pw") as name:
        yield Path(name)


@pytest.fixture
def agent(short_dir: Path) -> Iterator[StandInAgent]:
    server = StandInAgent(short_dir / "agent.sock")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache" / ("ab" * 20) / PKG
    make_executable(folder / "installer.py", INSTALLER)
    monkeypatch.setenv("INSTALLER_RECORD", str(tmp_path / "record.jsonl"))
    monkeypatch.setenv("INSTALLER_EXIT", "0")
    return folder


def records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "record.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def log_lines(tmp_path: Path) -> list[str]:
    return (tmp_path / "wrapper.log").read_text().splitlines()


def wrap(agent: StandInAgent, tmp_path: Path, *command: str, extra: tuple[str, ...] = (), **kwargs: Any) -> int:
    argv = ["--agent", agent.address, "--log", str(tmp_path / "wrapper.log"), *extra, *command]
    return invoke(argv, cwd=kwargs.pop("cwd", "/"), timing=kwargs.pop("timing", FAST), **kwargs)


# ---------------------------------------------------------------- the package is ready


@pytest.mark.parametrize("code", [0, 3010, 1603, 1641])
def test_complete_package_runs_and_the_exit_code_passes_through(
    agent: StandInAgent, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    agent.add(PKG, path=package)
    monkeypatch.setenv("INSTALLER_EXIT", str(code))
    tricky = ["/i", "a b.msi", 'TRANSFORMS="a b.mst"', "/qn", "", "$HOME", "x\\\"y"]
    result = wrap(agent, tmp_path, "installer.py", *tricky, extra=("--pkg", PKG))
    assert result == code & 0xFF  # a POSIX child's status has 8 bits; on Windows the code is whole
    assert records(tmp_path) == [{"argv": tricky, "cwd": str(package)}]
    assert [what for what, _ in agent.calls] == ["ensure", "verify", "lease", "release"]
    assert agent.acquired == [(PKG, os.getpid())]
    assert agent.leases == {} and len(agent.released) == 1
    [line] = log_lines(tmp_path)
    assert f"package={PKG} outcome=ran exit={code & 0xFF} " in line and "program=installer.py" in line
    assert "a b.msi" not in line  # arguments are never logged


def test_package_id_from_the_working_directory(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package)
    assert wrap(agent, tmp_path, "installer.py", cwd=f"\\\\DP01\\SMSPKGD$\\{PKG}\\") == 0
    assert records(tmp_path)[0]["cwd"] == str(package)


def test_two_wrappers_for_the_same_package_both_run(
    agent: StandInAgent, package: Path, tmp_path: Path, short_dir: Path
) -> None:
    agent.add(PKG, path=package)
    make_executable(
        package / "slow.py",
        f"#!{sys.executable}\nimport os, sys, time\ntime.sleep(0.6)\n"
        f"open(os.environ['INSTALLER_RECORD'], 'a').write(sys.argv[1] + '\\n')\nsys.exit(int(sys.argv[1]))\n",
    )
    env = {**os.environ, "P2PDIST_WRAPPER_LOG": str(tmp_path / "wrapper.log")}
    cmd = [sys.executable, "-m", "p2pdist.wrapper", "--agent", agent.address, "--pkg", PKG, "slow.py"]
    first = subprocess.Popen([*cmd, "3"], env=env)
    second = subprocess.Popen([*cmd, "5"], env=env)
    assert first.wait(timeout=20) == 3 and second.wait(timeout=20) == 5
    assert sorted((tmp_path / "record.jsonl").read_text().split()) == ["3", "5"]
    assert agent.most_leases == 2  # both held a lease at the same time
    assert sorted(pid for _, pid in agent.acquired) == sorted([first.pid, second.pid])
    assert agent.leases == {} and len(agent.released) == 2
    assert len(log_lines(tmp_path)) == 2


def test_wrapper_outlasts_ctrl_c_passes_sigterm_on_and_releases_the_lease(
    agent: StandInAgent, package: Path, tmp_path: Path
) -> None:
    agent.add(PKG, path=package)
    ready = tmp_path / "ready"
    make_executable(
        package / "trap.py",
        f"#!{sys.executable}\nimport signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(20)\nsys.exit(1)\n",
    )
    env = {**os.environ, "P2PDIST_WRAPPER_LOG": str(tmp_path / "wrapper.log")}
    wrapper = subprocess.Popen([sys.executable, "-m", "p2pdist.wrapper", "--agent", agent.address, "--pkg", PKG, "trap.py"], env=env)
    deadline = time.monotonic() + 15
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists()
    wrapper.send_signal(signal.SIGINT)  # a Ctrl-C meant for the wrapper alone: it stays for its command
    time.sleep(0.3)
    assert wrapper.poll() is None
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=10) == 42
    assert agent.leases == {} and len(agent.released) == 1


# ---------------------------------------------------------------- not ready: the retry code


def test_incomplete_package_exits_with_the_retry_code(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package, progress=0.42, peers=3)
    started = time.monotonic()
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG)) == 1618
    assert time.monotonic() - started < 3
    assert records(tmp_path) == [] and agent.acquired == []
    [line] = log_lines(tmp_path)
    assert "outcome=retry exit=1618 " in line and "progress=42.0%" in line
    assert "downloading, 42.0% of 50.0 MiB, 3 peers" in line


def test_custom_retry_code_and_tracker_error_in_the_reason(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package, progress=0.1, tracker_error="tracker unreachable: connection refused")
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG, "--retry-code", "1008")) == 1008
    assert "tracker error: tracker unreachable: connection refused" in log_lines(tmp_path)[0]


def test_package_failing_reverification_is_not_run(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package)
    agent.damaged = True
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG)) == 1618
    assert records(tmp_path) == [] and agent.acquired == []
    assert "failed re-verification" in log_lines(tmp_path)[0]


def test_lease_refused_is_a_retry(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package)
    agent.lease_conflict = True
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG)) == 1618
    assert records(tmp_path) == []
    assert "lease: agent: package is not complete (HTTP 409)" in log_lines(tmp_path)[0]


def test_wrong_version_is_a_retry(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package)
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG, "--version", "4")) == 1618
    assert "the agent has version 3, the program asks for version 4" in log_lines(tmp_path)[0]


def test_unknown_package_is_a_retry_with_the_agents_reason(agent: StandInAgent, tmp_path: Path) -> None:
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", "PS1000FF")) == 1618
    assert "PS1000FF is not in the repository (HTTP 404)" in log_lines(tmp_path)[0]


def test_hanging_agent_is_bounded(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package)
    agent.delay = 30.0
    started = time.monotonic()
    code = wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG), timing=Timing(quick=0.5))
    assert code == 1618 and time.monotonic() - started < 3
    assert "ensure: no answer from the agent within 0.5 s" in log_lines(tmp_path)[0]


def test_no_agent_listening_exits_with_the_retry_code_within_seconds(tmp_path: Path, short_dir: Path) -> None:
    """A real wrapper process; the socket file is there (a dead agent's) but nothing listens."""
    import socket

    stale = short_dir / "dead.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stale))
    sock.close()
    log = tmp_path / "wrapper.log"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "p2pdist.wrapper", "--agent", f"unix:{stale}", "--log", str(log), "--pkg", PKG, "setup.exe"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert time.monotonic() - started < 5
    assert result.returncode == 1618 & 0xFF
    assert f"{PKG} not ready: ensure: no agent at unix:{stale}" in result.stderr
    [line] = log.read_text().splitlines()
    assert "outcome=retry exit=1618 " in line


def test_missing_socket_is_a_retry(tmp_path: Path, short_dir: Path) -> None:
    log = str(tmp_path / "wrapper.log")
    assert invoke(["--agent", f"unix:{short_dir}/none.sock", "--log", log, "--pkg", PKG, "x"], timing=FAST) == 1618
    assert "is the agent running?" in log_lines(tmp_path)[0]


# ---------------------------------------------------------------- --wait


def test_wait_runs_once_the_download_completes(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package, progress=0.0)
    agent.step_on_status = 0.25
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG, "--wait", "10")) == 0
    assert len(records(tmp_path)) == 1
    assert [what for what, _ in agent.calls].count("status") == 4


def test_wait_gives_up_on_a_stalled_download(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package, progress=0.5)
    started = time.monotonic()
    code = wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG, "--wait", "30"),
                timing=Timing(quick=2.0, poll=0.05, stall=0.5))  # fmt: skip
    assert code == 1618 and 0.5 <= time.monotonic() - started < 3
    assert records(tmp_path) == []


def test_wait_is_bounded_by_its_seconds(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package, progress=0.0)
    agent.step_on_status = 0.001  # progressing, but far too slowly
    started = time.monotonic()
    assert wrap(agent, tmp_path, "installer.py", extra=("--pkg", PKG, "--wait", "0.6")) == 1618
    assert 0.6 <= time.monotonic() - started < 3


# ---------------------------------------------------------------- the wrapper's own codes


def test_command_not_found_releases_the_lease(agent: StandInAgent, package: Path, tmp_path: Path) -> None:
    agent.add(PKG, path=package)
    assert wrap(agent, tmp_path, "no-such-installer.exe", extra=("--pkg", PKG)) == EXIT_NOT_FOUND
    assert agent.leases == {} and len(agent.released) == 1
    assert "outcome=not-found exit=7703" in log_lines(tmp_path)[0]


def test_internal_error_is_one_line_and_releases_the_lease(
    agent: StandInAgent, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent.add(PKG, path=str(package) + "\x00")  # a folder no system call accepts
    assert wrap(agent, tmp_path, str(package / "installer.py"), extra=("--pkg", PKG)) == EXIT_INTERNAL
    assert agent.leases == {} and len(agent.released) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError" in err and "Traceback" not in err
    assert "outcome=internal exit=7704" in log_lines(tmp_path)[0]


def test_usage_and_no_package_are_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PDIST_WRAPPER_LOG", str(tmp_path / "wrapper.log"))
    assert invoke(["--bogus", "setup.exe"]) == EXIT_USAGE
    assert invoke(["setup.exe"], cwd="/home/admin") == EXIT_NO_PACKAGE
    usage, no_package = log_lines(tmp_path)
    assert "outcome=usage exit=7701" in usage and "unknown option" in usage
    assert "outcome=no-package exit=7702" in no_package


# ---------------------------------------------------------------- with the SMS client simulator


async def test_sms_simulator_retries_the_wrapper_until_the_package_is_complete(
    agent: StandInAgent, package: Path, tmp_path: Path
) -> None:
    agent.add(PKG, path=package, progress=0.0)
    agent.step_on_ensure = 0.4  # complete at the third ensure
    env = {**os.environ, "P2PDIST_WRAPPER_LOG": str(tmp_path / "wrapper.log"), "INSTALLER_EXIT": "0"}
    argv = [sys.executable, "-m", "p2pdist.wrapper", "--agent", agent.address, "--pkg", PKG, "installer.py", "/qn"]
    result = await simulate(argv, retry_codes=[1618], interval=0.1, max_attempts=5, env=env, quiet=True)
    assert result.outcome == "success" and result.exit_code == 0
    assert [a.exit_code for a in result.attempts] == [82, 82, 0]  # 1618 as a POSIX status
    assert records(tmp_path) == [{"argv": ["/qn"], "cwd": str(package)}]
    assert [line.split(" outcome=")[1].split()[0] for line in log_lines(tmp_path)] == ["retry", "retry", "ran"]


@pytest.mark.parametrize("started_in", ["\\\\DP01\\SMSPKGD$\\{pkg}\\x86\\setup", "/mnt/dp/{pkg}/x86/setup/"])
def test_relative_start_in_runs_in_the_same_subfolder_of_the_cache(
    agent: StandInAgent, package: Path, tmp_path: Path, started_in: str
) -> None:
    """A program whose "Start in" is a subfolder of the package runs there in the cached copy,
    and a bare program name is looked up there first."""
    agent.add(PKG, path=package)
    subfolder = package / "x86" / "setup"
    make_executable(subfolder / "installer.py", INSTALLER)
    assert wrap(agent, tmp_path, "installer.py", "/q", cwd=started_in.format(pkg=PKG)) == 0
    assert records(tmp_path) == [{"argv": ["/q"], "cwd": str(subfolder)}]


def test_start_in_a_folder_the_package_lacks_runs_at_its_top(
    agent: StandInAgent, package: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    agent.add(PKG, path=package)
    assert wrap(agent, tmp_path, "installer.py", cwd=f"/mnt/dp/{PKG}/nothing-here", extra=("--pkg", PKG)) == 0
    assert records(tmp_path)[0]["cwd"] == str(package)
    assert "has no folder 'nothing-here'" in capfd.readouterr().err
