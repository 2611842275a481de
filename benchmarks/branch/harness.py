"""What every approach shares: the package, the signed torrent, HQ's services, counters, timelines.

The package and its signed torrent are made once per run (seeded bytes, so a seed gives the same
package). Each approach then gets fresh HQ services (distribution point, and for the swarms a
fresh site server with the torrent published), fresh client folders, and WAN counters read as
differences from the moment its clients are told to start (t0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.branch.netns import Network
from benchmarks.branch.procs import Proc, Procs
from benchmarks.branch.topology import HQ_ADDRESS, SITE_SUBNET, Topology
from p2pdist.metainfo import signing
from p2pdist.config import toml_value

PACKAGE_ID = "PS100001"
DP_PORT = 8080
TRACKER_PORT = 6969
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INSTALLER = '''"""Stand-in installer: records that it ran, from where, with how many payload bytes."""
import json, os, sys, time
receipt = sys.argv[sys.argv.index("--receipt") + 1]
with open(receipt, "w") as handle:
    json.dump({"cwd": os.getcwd(), "payload_bytes": os.path.getsize("payload.bin"), "time": time.time()}, handle)
'''


@dataclass(frozen=True)
class Tunables:
    """Settings the harness writes into agent.toml / site.toml (not engine code)."""

    web_seed_grace: float = 1.0
    choke_interval: float = 2.0
    upload_slots: int = 8
    tick_interval: float = 0.5
    tracker_interval: int = 15
    numwant_max: int = 0  # 0: the site server's default
    # "locations": one site for 198.18.0.0/15, a location per branch (the intended setup);
    # "sites": a site per branch, so the tracker never introduces PCs of different branches.
    site_layout: str = "locations"
    extra_agent_toml: str = ""


@dataclass
class Options:
    retry_interval: float = 5.0  # the SMS simulator's retry interval
    stagger: float = 1.0  # client starts spread uniformly over this many seconds
    timeout: float = 0.0  # per approach; 0 = derived from the bound
    piece_size: str = ""  # "" = the creator's automatic choice
    sample_interval: float = 1.0  # each sample queries every agent: the emulated PCs share two cores
    # Run agents, wrapper and site server from this folder's p2pdist package (an A/B of an engine
    # patch without touching the tree): it goes first on their PYTHONPATH.
    p2pdist_path: Path | None = None
    tunables: Tunables = field(default_factory=Tunables)


class Harness:
    def __init__(self, net: Network, work: Path, options: Options) -> None:
        self.net = net
        self.topo: Topology = net.topology
        self.params = self.topo.params
        self.work = work
        self.options = options
        self.python = sys.executable
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs = Procs(self.logs, work)
        rng = random.Random(self.params.seed)
        self.offsets = {client.name: rng.uniform(0.0, options.stagger) for client in self.topo.clients}
        self.share = work / "share"
        self.torrent = work / f"{PACKAGE_ID}.torrent"
        self.key_hex = ""
        paths = [str(options.p2pdist_path)] if options.p2pdist_path else []
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [str(ROOT)]))

    # -- once per run ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Signing key, the package on the DP share, its signed torrent."""
        key = signing.generate_key()
        signing.write_private_key(key, self.work / "repository.key")
        self.key_hex = signing.raw_public_key(key.public_key()).hex()
        (self.work / "admin.token").write_text(os.urandom(16).hex())
        package = self.share / PACKAGE_ID
        package.mkdir(parents=True)
        (package / "install.py").write_text(INSTALLER)
        rng = random.Random(self.params.seed)
        with open(package / "payload.bin", "wb") as handle:
            left = self.params.size_bytes
            while left > 0:
                chunk = min(left, 1 << 22)
                handle.write(rng.randbytes(chunk))
                left -= chunk
        argv = [
            self.python, "-m", "p2pdist", "create", str(package), "-o", str(self.torrent), "--pkg", PACKAGE_ID,
            "--version", "1", "-t", f"http://{HQ_ADDRESS}:{TRACKER_PORT}/announce", "-w", f"http://{HQ_ADDRESS}:{DP_PORT}/",
            "--sign-key", str(self.work / "repository.key"),
        ]  # fmt: skip
        if self.options.piece_size:
            argv += ["--piece-size", self.options.piece_size]
        self._check([*argv], "create the torrent")

    def _check(self, argv: list[str], what: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=self.env, cwd=self.work)
        if done.returncode:
            raise RuntimeError(f"cannot {what}: {(done.stderr or done.stdout).strip()[:800]}")

    @property
    def package_files(self) -> list[str]:
        return [f"{PACKAGE_ID}/install.py", f"{PACKAGE_ID}/payload.bin"]

    # -- HQ ------------------------------------------------------------------------------------

    async def start_hq(self, tag: str, *, tracker: bool) -> tuple[list[Proc], Path]:
        """The DP (and the site server with the torrent published); returns them and the DP stats file."""
        stats = self.work / tag / "dp-stats.json"
        stats.parent.mkdir(parents=True, exist_ok=True)
        hq = self.topo.hq
        procs = [
            await self.procs.spawn(
                f"{tag}-dp",
                self.net.exec_argv(hq, [self.python, str(HERE / "dp.py"), str(self.share), "--host", HQ_ADDRESS, "--port", str(DP_PORT), "--stats", str(stats)]),
            )
        ]
        if tracker:
            config = self._site_toml(self.work / tag)
            argv = self.net.exec_argv(hq, [self.python, "-m", "p2pdist.tracker", "--config", str(config)])
            procs.append(await self.procs.spawn(f"{tag}-site", argv, env=self.env))
            await self.wait_listening(hq, TRACKER_PORT, procs[-1])
            publish = [
                self.python, "-m", "p2pdist", "publish", str(self.torrent), "--server", f"http://{HQ_ADDRESS}:{TRACKER_PORT}",
                "--token-file", str(self.work / "admin.token"),
            ]  # fmt: skip
            await asyncio.to_thread(self._check, self.net.exec_argv(hq, publish), "publish the torrent")
        await self.wait_listening(hq, DP_PORT, procs[0])
        return procs, stats

    def _site_toml(self, folder: Path) -> Path:
        tun = self.options.tunables
        lines = [
            f"data_dir = {toml_value(folder / 'server')}",
            f"admin_token_file = {toml_value(self.work / 'admin.token')}",
            f"public_keys = [{toml_value(self.key_hex)}]",
            "[listen]",
            f'host = "{HQ_ADDRESS}"',
            f"port = {TRACKER_PORT}",
            "[tracker]",
            f"interval = {tun.tracker_interval}",
            f"min_interval = {max(1, tun.tracker_interval // 3)}",
            f"peer_expiry = {tun.tracker_interval * 4}",
        ]
        if tun.numwant_max:
            lines.append(f"numwant_max = {tun.numwant_max}")
        if tun.site_layout == "sites":
            lines += ["[[sites]]", 'name = "HQ"', 'subnets = ["198.18.0.0/24"]']
            for branch in self.topo.branches:
                lines += ["[[sites]]", f'name = "{branch.name}"', f'subnets = ["{branch.subnet}"]']
        else:
            lines += ["[[sites]]", 'name = "Enterprise"', f'subnets = ["{SITE_SUBNET}"]', "isolate_locations = true"]
            lines += ["  [[sites.locations]]", '  name = "HQ"', '  subnets = ["198.18.0.0/24"]']
            for branch in self.topo.branches:
                lines += ["  [[sites.locations]]", f'  name = "{branch.name}"', f'  subnets = ["{branch.subnet}"]']
        path = folder / "site.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def wait_listening(self, namespace: str, port: int, proc: Proc, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self.net.listening, namespace, port):
            if proc.process.returncode is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode} (see {proc.log})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} is not listening on port {port} after {timeout:g} s (see {proc.log})")
            await asyncio.sleep(0.1)

    @staticmethod
    def read_dp_stats(stats: Path) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(stats.read_text()).items()}
        except (OSError, ValueError):
            return {}

    # -- measuring -----------------------------------------------------------------------------

    def wan_counters(self) -> dict[str, Any]:
        """Bytes into (down) and out of (up) each branch over its WAN link, and out of HQ's uplink."""
        core = self.net.counters(self.topo.core)
        hq = self.net.counters(self.topo.hq)
        branches = {}
        for branch in self.topo.branches:
            rx, tx = core.get(f"wan{branch.number}", (0, 0))
            branches[branch.name] = {"down": tx, "up": rx}
        up_rx, up_tx = hq.get("up0", (0, 0))
        return {"branches": branches, "hq_out": up_tx, "hq_in": up_rx}

    @staticmethod
    def counter_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        return {
            "branches": {
                name: {k: after["branches"][name][k] - before["branches"][name][k] for k in ("down", "up")}
                for name in after["branches"]
            },
            "hq_out": after["hq_out"] - before["hq_out"],
            "hq_in": after["hq_in"] - before["hq_in"],
        }

    def timeout_for(self, bound_s: float, factor: float = 5.0) -> float:
        """The approach's time limit: ``factor`` x its own bound, plus the start spread and 20 s."""
        return self.options.timeout or max(60.0, factor * bound_s + self.options.stagger + 20.0)


class Sampler:
    """WAN counters (and whatever ``extra`` returns) every ``interval`` seconds, from t0 on."""

    def __init__(self, harness: Harness, t0: float, extra: Any = None) -> None:
        self.harness = harness
        self.t0 = t0
        self.extra = extra
        self.rows: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.base = harness.wan_counters()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    @staticmethod
    def _cpu_times() -> tuple[int, int]:
        """(busy, total) jiffies over all cores: the machine is shared by every emulated PC."""
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values) - idle, sum(values)

    async def _loop(self) -> None:
        interval = self.harness.options.sample_interval
        last_cpu = self._cpu_times()
        while True:
            row: dict[str, Any] = {"t": round(time.time() - self.t0, 3)}
            cpu = self._cpu_times()
            row["cpu_busy"] = round((cpu[0] - last_cpu[0]) / max(1, cpu[1] - last_cpu[1]), 3)
            last_cpu = cpu
            counters = await asyncio.to_thread(self.harness.wan_counters)
            delta = Harness.counter_delta(counters, self.base)
            row["wan_down"] = {name: v["down"] for name, v in delta["branches"].items()}
            row["hq_out"] = delta["hq_out"]
            if self.extra is not None:
                row.update(await self.extra())
            self.rows.append(row)
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
