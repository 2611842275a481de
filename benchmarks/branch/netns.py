"""Bringing the emulated network up and down with ``ip`` and ``tc``; clean-up that cannot be skipped.

Every namespace is named ``<prefix>-...``, so whatever a crashed run left behind is found by
name and removed (``cleanup(prefix)``): first the processes inside those namespaces (by the pids
``ip netns pids`` lists), then the namespaces, which takes their veths, bridges and qdiscs with
them. Nothing is created in the caller's own namespace, so nothing there needs undoing.

Commands go through ``ip -batch`` / ``tc -batch`` per namespace: a 2x8 topology is about 400
commands, and one process per command would take seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable

from benchmarks.branch.topology import HQ_ADDRESS, SITE_SUBNET, Shape, Topology


class NetnsError(RuntimeError):
    """A command that builds or inspects the network failed (the message has its stderr)."""


def _run(argv: list[str], stdin: str | None = None, check: bool = True, timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv[:4])}: {exc}") from None
    if check and done.returncode:
        raise NetnsError(f"{' '.join(argv[:6])} failed: {done.stderr.strip()[:800]}")
    return done.stdout


def _batch(tool: str, namespace: str | None, lines: Iterable[str]) -> None:
    text = "\n".join(lines)
    if not text:
        return
    argv = [tool] + (["-n", namespace] if namespace else []) + ["-batch", "-"]
    _run(argv, stdin=text + "\n")


def available() -> str | None:
    """None if this process may create network namespaces, else why not (for skipping tests)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"p2pbprobe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe], timeout=10)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _batch("ip", probe, ["link add name pa type veth peer name pb"])
        _batch("tc", probe, [f"qdisc add dev pa {line}" for line in _htb_root(10.0)[:1]])
    except NetnsError as exc:
        return f"veth or tc htb unavailable: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False, timeout=10)
    return None


def leftovers(prefix: str) -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if name.startswith(f"{prefix}-")]


def namespace_pids(namespace: str) -> list[int]:
    out = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in out.split() if word.isdigit()]


def cleanup(prefix: str, grace: float = 3.0) -> list[str]:
    """Remove every ``<prefix>-*`` namespace and end the processes in them; returns the names."""
    names = leftovers(prefix)
    pids = {pid for name in names for pid in namespace_pids(name)}
    pids.discard(os.getpid())
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = {pid for pid in pids if _alive(pid)}
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    for name in names:
        _run(["ip", "netns", "del", name], check=False)
    return names


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is gone for our purposes
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _htb_root(mbit: float) -> list[str]:
    """HTB with one class at ``mbit`` and a byte FIFO of ~100 ms (at least 128 KiB) under it.

    (fq_codel, sfq and netem are not in this kernel; the FIFO keeps queueing delay bounded.)
    """
    rate = f"{mbit * 1e6:.0f}bit"
    fifo = max(128 * 1024, min(4 << 20, int(mbit * 1e6 / 8 * 0.1)))
    burst = max(32 * 1024, int(mbit * 1e6 / 8 * 0.002))
    return [
        "root handle 1: htb default 1",
        f"parent 1: classid 1:1 htb rate {rate} ceil {rate} burst {burst} cburst {burst} quantum 60000",
        f"parent 1:1 handle 10: bfifo limit {fifo}",
    ]


def shape_commands(shape: Shape) -> list[str]:
    qdisc, klass, leaf = _htb_root(shape.mbit)
    return [f"qdisc add dev {shape.device} {qdisc}", f"class add dev {shape.device} {klass}", f"qdisc add dev {shape.device} {leaf}"]


class Network:
    """The namespaces of one ``Topology``; ``up()`` builds, ``down()`` removes (idempotent)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.prefix = topology.params.prefix
        self.is_up = False

    def up(self) -> None:
        cleanup(self.prefix)  # a crashed run's leftovers would collide with our names
        self.is_up = True  # from here on down() has something to remove, even half-built
        topo = self.topology
        _batch("ip", None, [f"netns add {name}" for name in topo.namespaces])
        for name in topo.namespaces:
            self._sysctl(name, {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"})
        hq, core = topo.hq, topo.core
        cmds: dict[str, list[str]] = {name: ["link set dev lo up"] for name in topo.namespaces}
        cmds[hq] += [
            f"link add name up0 type veth peer name hq0 netns {core}",
            "link set dev up0 up",
            f"addr add {HQ_ADDRESS}/24 dev up0",
        ]
        _batch("ip", hq, cmds.pop(hq))
        core_cmds = cmds.pop(core) + ["link set dev hq0 up", "addr add 198.18.0.254/24 dev hq0"]
        for branch in topo.branches:
            router = branch.namespace
            core_cmds += [
                f"link add name wan{branch.number} type veth peer name wan0 netns {router}",
                f"link set dev wan{branch.number} up",
                f"addr add {branch.wan_core}/30 dev wan{branch.number}",
            ]
        _batch("ip", core, core_cmds)
        _batch("ip", hq, [f"route add {SITE_SUBNET} via 198.18.0.254 dev up0"])
        _batch("ip", core, [f"route add {b.subnet} via {b.wan_router} dev wan{b.number}" for b in topo.branches])
        for branch in topo.branches:
            router = branch.namespace
            lines = cmds.pop(router) + [
                "link set dev wan0 up",
                f"addr add {branch.wan_router}/30 dev wan0",
                "link add name lan0 type bridge",
                "link set dev lan0 up",
                f"addr add {branch.gateway}/24 dev lan0",
            ]
            for client in branch.clients:
                lines += [
                    f"link add name p{client.number} type veth peer name eth0 netns {client.namespace}",
                    f"link set dev p{client.number} master lan0",
                    f"link set dev p{client.number} up",
                ]
            lines.append(f"route add {SITE_SUBNET} via {branch.wan_core} dev wan0")
            _batch("ip", router, lines)
            for client in branch.clients:
                _batch("ip", client.namespace, cmds.pop(client.namespace) + [
                    "link set dev eth0 up",
                    f"addr add {client.address}/24 dev eth0",
                    f"route add {SITE_SUBNET} via {branch.gateway} dev eth0",
                ])  # fmt: skip
        for name in [core] + [b.namespace for b in topo.branches]:
            self._sysctl(name, {"net.ipv4.ip_forward": "1"})
        by_namespace: dict[str, list[str]] = {}
        for shape in topo.shapes:
            by_namespace.setdefault(shape.namespace, []).extend(shape_commands(shape))
        for name, lines in by_namespace.items():
            _batch("tc", name, lines)

    def _sysctl(self, namespace: str, values: dict[str, str]) -> None:
        script = "; ".join(f"echo {value} > /proc/sys/{key.replace('.', '/')}" for key, value in values.items())
        _run(["ip", "netns", "exec", namespace, "sh", "-c", script])

    def down(self) -> None:
        if self.is_up:
            cleanup(self.prefix)
            self.is_up = False

    def exec_argv(self, namespace: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``namespace`` (sysfs and /etc/netns set up by ``ip netns exec``)."""
        return ["ip", "netns", "exec", namespace, *argv]

    def counters(self, namespace: str) -> dict[str, tuple[int, int]]:
        """{device: (rx_bytes, tx_bytes)} of every interface in ``namespace``."""
        out = _run(["ip", "-n", namespace, "-s", "-j", "link", "show"])
        result = {}
        for link in json.loads(out):
            stats = link.get("stats64", {})
            result[link["ifname"]] = (int(stats.get("rx", {}).get("bytes", 0)), int(stats.get("tx", {}).get("bytes", 0)))
        return result

    def listening(self, namespace: str, port: int) -> bool:
        out = _run(["ip", "netns", "exec", namespace, "ss", "-Hltn", f"sport = :{port}"], check=False)
        return bool(out.strip())
