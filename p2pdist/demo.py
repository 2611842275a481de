"""The local demo: a whole p2pdist site on one machine, on embedded defaults.

It plays every part of the data path with the real programs, each in its own process:

1. an administrator makes a signing key, a sample package on a distribution-point share, a
   signed torrent for it (``p2pdist create``) and publishes it (``p2pdist publish``);
2. the site server (``python -m p2pdist.tracker``) tracks it and serves the torrent;
3. a distribution point serves the share over HTTP (the web seed);
4. three agents (``python -m p2pdist.agent``) on 127.0.1.1-3 play three PCs of a branch office;
5. on each PC the SMS client (the simulator) runs the program line
   ``p2pdist-wrapper --pkg PS100001 <python> install.py``, again every few seconds while it
   answers "retry" (1618), until the package is complete and the installer ran from the cache.

Then it prints what was installed where, how long it took, and how many bytes came from other
PCs versus the distribution point, and stops everything. ``p2pdist demo --help`` for options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from p2pdist.control.client import ControlClient

from p2pdist.control.schema import AgentUnavailable, PackageStatus
from p2pdist.engine.runtime import run
from p2pdist.config import toml_value
from p2pdist.localports import spare_port
from p2pdist.metainfo import signing
from p2pdist.wrapper.smsim import Result, simulate

PACKAGE_ID = "PS100001"
INSTALLER = '''"""A stand-in installer: records how it was run, as an MSI would record its install."""
import json, os, sys, time
receipt = sys.argv[sys.argv.index("--receipt") + 1]
payload = os.path.getsize("payload.bin")
with open(receipt, "w") as handle:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(), "payload_bytes": payload, "time": time.time()}, handle)
print(f"installed from {os.getcwd()}")
sys.exit(0)
'''


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo", help="run a whole site on this machine: server, DP, three agents, SMS")
    parser.add_argument("--size-mib", type=int, default=32, help="size of the sample package (default 32)")
    parser.add_argument("--agents", type=int, default=3, choices=range(1, 10), metavar="N", help="PCs in the branch (1-9, default 3)")
    parser.add_argument("--retry-interval", type=float, default=3.0, help="seconds between SMS retries (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, caches) and print its path")
    parser.add_argument("--timeout", type=float, default=240.0, help="give up after this many seconds")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="p2pdist-demo-"))
    try:
        return run(Demo(work, args).run())
    finally:
        if args.keep:
            print(f"demo files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _say(text: str) -> None:
    print(text, flush=True)


WINDOWS = sys.platform == "win32"


@dataclass
class Pc:
    number: int
    address: str
    config: Path
    control: str  # the control API: a Unix socket on POSIX, loopback TCP with a token on Windows
    token_file: Path | None
    process: subprocess.Popen[bytes] | None = None
    result: Result | None = None
    status: PackageStatus | None = None


class Demo:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.python = sys.executable
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = work / "logs"
        self.logs.mkdir()

    # -- steps -----------------------------------------------------------------------------

    async def run(self) -> int:
        started = time.monotonic()
        dp_runner: web.AppRunner | None = None
        try:
            key_hex = self._keygen()
            share, payload_size = self._make_package()
            dp_runner, dp_url = await self._serve_share(share)
            server_url = await self._start_server(key_hex)
            torrent = self._create_and_publish(share, server_url, dp_url)
            pcs = await self._start_agents(server_url, key_hex)
            _say(f"[sms] running the program on {len(pcs)} PCs; 'not ready' answers are retried every {self.args.retry_interval:g} s")
            async with asyncio.timeout(self.args.timeout):
                await asyncio.gather(*(self._install(pc, index) for index, pc in enumerate(pcs)))
            await self._collect(pcs)
            self._report(pcs, payload_size, torrent, time.monotonic() - started)
            return 0 if all(pc.result and pc.result.succeeded for pc in pcs) else 1
        except asyncio.TimeoutError:
            _say(f"demo: error: not every PC installed the package within {self.args.timeout:g} s (logs in {self.logs}; use --keep)")
            return 1
        finally:
            await self._stop_all()
            if dp_runner is not None:
                await dp_runner.cleanup()

    def _keygen(self) -> str:
        key = signing.generate_key()
        signing.write_private_key(key, self.work / "repository.key")
        public = signing.raw_public_key(key.public_key()).hex()
        (self.work / "repository.pub").write_text(public + "\n")
        (self.work / "admin.token").write_text(os.urandom(16).hex())
        _say(f"[admin] signing key made (public key {public[:16]}...)")
        return public

    def _make_package(self) -> tuple[Path, int]:
        share = self.work / "SMSPKG"
        package = share / PACKAGE_ID
        package.mkdir(parents=True)
        (package / "install.py").write_text(INSTALLER)
        size = self.args.size_mib << 20
        with open(package / "payload.bin", "wb") as handle:
            for _ in range(self.args.size_mib):
                handle.write(os.urandom(1 << 20))
        (self.work / "receipts").mkdir()
        _say(f"[admin] sample package {PACKAGE_ID} on the distribution point share: install.py + {self.args.size_mib} MiB payload")
        return share, size

    async def _serve_share(self, share: Path) -> tuple[web.AppRunner, str]:
        """The distribution point: the share over HTTP with range requests (BEP 19 web seed)."""
        app = web.Application()
        app.router.add_static("/", share, follow_symlinks=False, show_index=False)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = spare_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}/"
        _say(f"[dp] distribution point serving the share at {url}")
        return runner, url

    async def _start_server(self, key_hex: str) -> str:
        port = spare_port()
        config = self.work / "site.toml"
        config.write_text(
            f"data_dir = {toml_value(self.work / 'server')}\n"
            f"admin_token_file = {toml_value(self.work / 'admin.token')}\n"
            f"public_keys = [{toml_value(key_hex)}]\n"
            "[listen]\n"
            f'host = "127.0.0.1"\nport = {port}\n'
            "[tracker]\ninterval = 15\nmin_interval = 5\npeer_expiry = 60\n"
            "[[sites]]\n"
            'name = "HQ"\nsubnets = ["127.0.0.0/8"]\n'
            "  [[sites.locations]]\n"
            '  name = "Branch-1"\n  subnets = ["127.0.1.0/24"]\n'
        )
        self._spawn("server", [self.python, "-m", "p2pdist.tracker", "--config", str(config)])
        url = f"http://127.0.0.1:{port}"
        await self._wait_port("127.0.0.1", port, "site server")
        _say(f"[site] site server (tracker + repository + page) at {url}/")
        return url

    def _create_and_publish(self, share: Path, server_url: str, dp_url: str) -> Path:
        torrent = self.work / f"{PACKAGE_ID}.torrent"
        self._cli(
            "create", str(share / PACKAGE_ID), "-o", str(torrent), "--pkg", PACKAGE_ID, "--version", "1",
            "-t", f"{server_url}/announce", "-w", dp_url, "--sign-key", str(self.work / "repository.key"),
        )
        self._cli("publish", str(torrent), "--server", server_url, "--token-file", str(self.work / "admin.token"))
        _say(f"[admin] {PACKAGE_ID} v1 torrent created, signed and published")
        return torrent

    async def _start_agents(self, server_url: str, key_hex: str) -> list[Pc]:
        pcs = []
        for number in range(1, self.args.agents + 1):
            address = f"127.0.1.{number}"
            home = self.work / f"pc{number}"
            home.mkdir()
            config = home / "agent.toml"
            if WINDOWS:  # no Unix sockets: loopback TCP, and the token the agent writes at start
                control, token_file = f"http://127.0.0.1:{spare_port()}", home / "state" / "control.token"
            else:
                control, token_file = f"unix:{home / 'control.sock'}", None
            config.write_text(
                f"repository = {toml_value(server_url)}\n"
                f"public_keys = [{toml_value(key_hex)}]\n"
                f"cache_dir = {toml_value(home / 'cache')}\n"
                f"state_dir = {toml_value(home / 'state')}\n"
                f"log_file = {toml_value(self.logs / f'agent{number}.log')}\n"
                "web_seed_grace = 2.0\nreport_interval = 5.0\n"
                "[engine]\n"
                f"listen_host = {toml_value(address)}\nlisten_port = 6881\nbind_host = {toml_value(address)}\n"
                "tick_interval = 0.5\nchoke_interval = 2.0\n"
                "[control]\n"
                f"address = {toml_value(control)}\n"
            )
            pc = Pc(number, address, config, control, token_file)
            pc.process = self._spawn(f"agent{number}", [self.python, "-m", "p2pdist.agent", "--config", str(config)])
            pcs.append(pc)
        for pc in pcs:
            await self._wait_agent(pc)
        _say(f"[pcs] {len(pcs)} agents running on {', '.join(pc.address for pc in pcs)}")
        return pcs

    async def _install(self, pc: Pc, index: int) -> None:
        await asyncio.sleep(index * 0.5)  # PCs get the program at slightly different moments
        receipt = self.work / "receipts" / f"pc{pc.number}.json"
        argv = [
            self.python, "-m", "p2pdist.wrapper", "--pkg", PACKAGE_ID, "--agent", pc.control,
            *(["--token-file", str(pc.token_file)] if pc.token_file else []),
            "--log", str(self.logs / "wrapper.log"),
            self.python, "install.py", "/quiet", "--receipt", str(receipt),
        ]
        pc.result = await simulate(argv, interval=self.args.retry_interval, max_attempts=200, quiet=True)
        attempts = len(pc.result.attempts)
        _say(f"[pc{pc.number}] {pc.result.outcome} after {pc.result.duration:.1f} s ({attempts} run{'s' if attempts != 1 else ''} of the program)")

    async def _collect(self, pcs: list[Pc]) -> None:
        await asyncio.sleep(1.0)
        for pc in pcs:
            with contextlib.suppress(AgentUnavailable):
                async with ControlClient(pc.control, token_file=pc.token_file) as client:
                    pc.status = await client.status(PACKAGE_ID)

    def _report(self, pcs: list[Pc], size: int, torrent: Path, elapsed: float) -> None:
        mib = 1 << 20
        _say("")
        _say(f"{'PC':<5} {'address':<11} {'installed after':>15} {'runs':>5} {'exit':>5} {'from peers':>11} {'from DP':>9}  installed from")
        total_dp = total_peers = 0
        for pc in pcs:
            result, status = pc.result, pc.status
            receipt_path = self.work / "receipts" / f"pc{pc.number}.json"
            receipt = json.loads(receipt_path.read_text()) if receipt_path.exists() else {}
            peers = status.bytes_from_peers if status else 0
            dp = status.bytes_from_webseed if status else 0
            total_dp += dp
            total_peers += peers
            duration = f"{result.duration:.1f} s" if result else "-"
            runs = len(result.attempts) if result else 0
            code = result.exit_code if result else "-"
            _say(
                f"pc{pc.number:<3} {pc.address:<11} {duration:>15} {runs:>5} {code!s:>5} "
                f"{peers / mib:>8.1f} MiB {dp / mib:>5.1f} MiB  {receipt.get('cwd', '(not installed)')}"
            )
        _say("")
        _say(
            f"package {size / mib:.0f} MiB x {len(pcs)} PCs: {total_dp / mib:.1f} MiB from the distribution point "
            f"({total_dp / size:.2f} copies over the WAN; plain SMS would pull {len(pcs)}), "
            f"{total_peers / mib:.1f} MiB from other PCs. Demo took {elapsed:.0f} s."
        )

    # -- process plumbing --------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.out", "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.processes.append(process)
        return process

    def _cli(self, *args: str) -> None:
        result = subprocess.run(
            [self.python, "-m", "p2pdist", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if result.returncode:
            raise SystemExit(f"demo: error: p2pdist {args[0]} failed: {result.stderr.strip()}")

    async def _wait_port(self, host: str, port: int, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"demo: error: the {what} did not start (see {self.logs})") from None
                await asyncio.sleep(0.1)

    async def _wait_agent(self, pc: Pc, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if pc.process is not None and pc.process.poll() is not None:
                out = self.logs / f"agent{pc.number}.out"
                raise SystemExit(f"demo: error: agent {pc.number} exited: {_last_line(out)} (see {out})")
            try:
                async with ControlClient(pc.control, token_file=pc.token_file, timeout=2.0) as client:
                    await client.list()
                return
            except AgentUnavailable:
                if time.monotonic() > deadline:
                    raise SystemExit(f"demo: error: agent {pc.number} did not start (see {self.logs})") from None
                await asyncio.sleep(0.2)

    async def _stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                _ask_to_stop(process)
        deadline = time.monotonic() + 15
        for process in self.processes:
            while process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if process.poll() is None:
                process.kill()
                process.wait()
        _say("[demo] everything stopped")


def _ask_to_stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM on POSIX; on Windows the agent's stop event (winstop), so it stops as gracefully."""
    if WINDOWS:
        from p2pdist.agent.winstop import request_stop

        if request_stop(process.pid):
            return
    process.send_signal(signal.SIGTERM)  # Windows: TerminateProcess, for what has no stop event


def _last_line(path: Path) -> str:
    """The last line a process wrote, for an error that must say why without the log (--keep
    is off, so the log goes with the demo's folder)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"
