"""The emulated enterprise network as plain data: names, addresses, rates. No side effects.

One HQ namespace (site server + distribution point) reaches a WAN core namespace through the
HQ uplink; each branch is a router namespace with a WAN link to the core and a bridge for its
LAN; each client PC is a namespace with one veth port on that bridge::

    hq (198.18.0.1) --uplink H-- core --WAN W-- b1 (router, bridge lan0) --d/u-- b1c1 .. b1cN
                                      \\--WAN W-- b2 (router, bridge lan0) --d/u-- b2c1 .. b2cN

Everything lives in 198.18.0.0/15 (RFC 2544, the benchmarking range): branch LANs are
198.18.<b>.0/24, WAN transfer nets 198.19.<b>.0/30, HQ 198.18.0.0/24. No namespace has a
default route, so nothing can leave the namespaces the benchmark creates.

Every link is shaped on egress at both ends (HTB with a byte FIFO), so each direction has its
own rate: the WAN downstream on the core's ``wan<b>``, upstream on the router's ``wan0``; a
client's download on its bridge port ``p<c>``, its upload on its own ``eth0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_BRANCHES = 200
MAX_CLIENTS = 200
HQ_ADDRESS = "198.18.0.1"
SITE_SUBNET = "198.18.0.0/15"


@dataclass(frozen=True)
class Params:
    """What a run varies; rates in Mbit/s (10^6 bit/s), the package in MiB."""

    branches: int = 2
    clients: int = 8
    wan_mbit: float = 20.0
    lan_mbit: float = 100.0
    hq_mbit: float = 1000.0  # HQ's uplink into the WAN, shared by every branch; 0 = unshaped
    size_mib: float = 50.0
    seed: int = 1
    prefix: str = "p2pb"

    def __post_init__(self) -> None:
        if not 1 <= self.branches <= MAX_BRANCHES:
            raise ValueError(f"branches must be 1-{MAX_BRANCHES}")
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"clients must be 1-{MAX_CLIENTS}")
        if self.wan_mbit <= 0 or self.lan_mbit <= 0 or self.hq_mbit < 0:
            raise ValueError("rates must be positive (hq_mbit may be 0: unshaped)")
        if self.size_mib <= 0:
            raise ValueError("size_mib must be positive")
        if not self.prefix.isalnum() or not 1 <= len(self.prefix) <= 6:
            raise ValueError("prefix must be 1-6 letters or digits (it starts every namespace name)")

    @property
    def size_bytes(self) -> int:
        return int(self.size_mib * (1 << 20))


@dataclass(frozen=True)
class Shape:
    """Egress shaping of one interface in one namespace."""

    namespace: str
    device: str
    mbit: float


@dataclass(frozen=True)
class Client:
    branch: int
    number: int
    namespace: str
    address: str

    @property
    def name(self) -> str:
        return f"b{self.branch}c{self.number}"


@dataclass(frozen=True)
class Branch:
    number: int
    namespace: str  # the branch router
    subnet: str
    gateway: str  # the router's LAN address
    wan_core: str  # core end of the WAN transfer net
    wan_router: str
    clients: tuple[Client, ...]

    @property
    def name(self) -> str:
        return f"branch-{self.number}"


@dataclass(frozen=True)
class Topology:
    params: Params
    hq: str
    core: str
    branches: tuple[Branch, ...]
    shapes: tuple[Shape, ...] = field(default=())

    @property
    def namespaces(self) -> list[str]:
        names = [self.hq, self.core]
        for branch in self.branches:
            names.append(branch.namespace)
            names.extend(client.namespace for client in branch.clients)
        return names

    @property
    def clients(self) -> list[Client]:
        return [client for branch in self.branches for client in branch.clients]

    def wan_device(self, branch: Branch) -> tuple[str, str]:
        """(namespace, device) whose tx counts bytes into the branch and rx bytes out of it."""
        return self.core, f"wan{branch.number}"


def plan(params: Params) -> Topology:
    """Names, addresses and shaping for ``params``."""
    prefix = params.prefix
    branches = []
    shapes = []
    hq, core = f"{prefix}-hq", f"{prefix}-core"
    if params.hq_mbit:
        shapes += [Shape(hq, "up0", params.hq_mbit), Shape(core, "hq0", params.hq_mbit)]
    for b in range(1, params.branches + 1):
        router = f"{prefix}-b{b}"
        clients = tuple(
            Client(b, c, f"{prefix}-b{b}c{c}", f"198.18.{b}.{9 + c}") for c in range(1, params.clients + 1)
        )
        branches.append(Branch(b, router, f"198.18.{b}.0/24", f"198.18.{b}.1", f"198.19.{b}.1", f"198.19.{b}.2", clients))
        shapes += [Shape(core, f"wan{b}", params.wan_mbit), Shape(router, "wan0", params.wan_mbit)]
        for client in clients:
            shapes += [Shape(router, f"p{client.number}", params.lan_mbit), Shape(client.namespace, "eth0", params.lan_mbit)]
    return Topology(params, hq, core, tuple(branches), tuple(shapes))
