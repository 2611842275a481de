"""Where the tracker keeps its peers: the store interface, the grouped swarm, the memory store.

A store holds, per torrent and site, one record per endpoint (address, port): a client that
restarts with a new peer id replaces its old record instead of showing up twice. One call per
announce both registers the peer and returns the site's swarm, so the Redis twin can do it in
one round trip. Stores never decide who meets whom; ``swarm.Tracker`` does, reading the swarm
group by group.

Layout (why it looks like this): a busy site server holds hundreds of thousands of
registrations, and an announce must not touch more than the few peers it hands out.

* A site's part of a torrent is a ``SiteSwarm``: a dict from (location, subnet) to
  ``PeerGroup``, plus live seeder/leecher counters, so the tracker can take its peers from the
  asker's own subnet, then location, then site without sorting the whole swarm per request.
* A ``PeerGroup`` keeps its peers as fixed-size entries in bytearrays, per role: the compact
  endpoints (BEP 23 / BEP 7: address + port) back to back, so a whole group's ``peers`` string
  is one slice, and beside them the tails ``peer id (20) | expiry (4, whole seconds)``. A peer
  costs its 30 (IPv4) or 42 (IPv6) bytes instead of a tuple, strings and a dict entry (about
  300 bytes). A group is one address family (a /24 or a /64), so it stays small and is
  searched with ``bytearray.find`` (C) instead of indexed; removal moves the last entry into
  the gap.
* Expiry is lazy: ``soonest`` is a lower bound of a group's expiry times. While it lies ahead,
  nobody in the group has expired and nothing is checked; the tracker skips expired records it
  meets, and the periodic sweep (which yields to the event loop as it goes) drops them. The
  counters include peers that expired since the last sweep (at most one sweep interval).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from struct import Struct
from typing import NamedTuple, Protocol

from p2pdist.errors import RemoteError

PEER_ID_LEN = 20
STAMP_MAX = 2**32 - 1  # expiry stamps: whole seconds of the store clock in 4 bytes (wall clock: until 2106)
SWEEP_BATCH = 2000  # peers looked at between two yields to the event loop


class StoreError(RemoteError):
    """The shared peer store (Redis) could not be reached or failed; the request is answered
    with a retry-later failure and the next one tries again."""


class PeerLimitError(RemoteError):
    """An address already has as many registrations as the tracker allows."""


def pack_endpoint(ip: str, port: int) -> bytes:
    """(address text, port) -> the 6- or 18-byte compact form (BEP 23 / BEP 7)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return socket.inet_pton(family, ip) + port.to_bytes(2, "big")


def unpack_endpoint(endpoint: bytes) -> tuple[str, int]:
    family = socket.AF_INET if len(endpoint) == 6 else socket.AF_INET6
    return socket.inet_ntop(family, endpoint[:-2]), int.from_bytes(endpoint[-2:], "big")


class PeerRecord(NamedTuple):
    """One registration as the tracker hands it to a store."""

    endpoint: bytes  # compact address + port
    peer_id: bytes
    seeder: bool
    group: tuple[str, str]  # (location, subnet key), see sites.Place
    expires: int  # second of the store's clock (PeerStore.clock) after which the peer is gone

    @property
    def ip(self) -> str:
        return unpack_endpoint(self.endpoint)[0]

    @property
    def port(self) -> int:
        return int.from_bytes(self.endpoint[-2:], "big")


@dataclass(frozen=True)
class SiteCounts:
    seeders: int = 0
    leechers: int = 0
    completed: int = 0


_TAIL = Struct(f">{PEER_ID_LEN}sL")  # peer id, expiry
TAIL_LEN = _TAIL.size


class PeerGroup:
    """The peers of one swarm in one (location, subnet), see the module doc.

    Per role (seeders, leechers) two parallel bytearrays: the compact endpoints back to back
    (``width`` bytes each, so a run of them is already a ``peers`` string) and the tails
    (peer id + expiry, ``TAIL_LEN`` bytes each). Peer ``i`` of a role is at ``i * width`` and
    ``i * TAIL_LEN``.
    """

    __slots__ = ("location", "width", "seeders", "seeder_tails", "leechers", "leecher_tails", "soonest")

    def __init__(self, location: str, width: int) -> None:
        self.location = location
        self.width = width  # 6 (IPv4) or 18 (IPv6)
        self.seeders = bytearray()
        self.seeder_tails = bytearray()
        self.leechers = bytearray()
        self.leecher_tails = bytearray()
        self.soonest = STAMP_MAX  # no peer of the group expires before this

    def __len__(self) -> int:
        return (len(self.seeders) + len(self.leechers)) // self.width

    def role(self, seeder: bool) -> tuple[bytearray, bytearray]:
        return (self.seeders, self.seeder_tails) if seeder else (self.leechers, self.leecher_tails)

    def _find(self, endpoints: bytearray, endpoint: bytes) -> int:
        """Index of ``endpoint`` in ``endpoints``, or -1 (a match across two entries is skipped)."""
        width = self.width
        at = endpoints.find(endpoint)
        while at > 0 and at % width:
            at = endpoints.find(endpoint, at + 1)
        return at // width if at >= 0 else -1

    def _cut(self, endpoints: bytearray, tails: bytearray, index: int) -> None:
        """Remove peer ``index``: the last peer moves into its place."""
        width = self.width
        last = len(endpoints) // width - 1
        if index != last:
            endpoints[index * width : (index + 1) * width] = endpoints[last * width :]
            tails[index * TAIL_LEN : (index + 1) * TAIL_LEN] = tails[last * TAIL_LEN :]
        del endpoints[last * width :]
        del tails[last * TAIL_LEN :]

    def put(self, endpoint: bytes, peer_id: bytes, expires: int, seeder: bool) -> bool | None:
        """Register or refresh a peer; its previous role (True: seeder) or None if it is new."""
        tail = _TAIL.pack(peer_id, min(expires, STAMP_MAX))
        if expires < self.soonest:
            self.soonest = expires
        endpoints, tails = self.role(seeder)
        index = self._find(endpoints, endpoint)
        if index >= 0:
            tails[index * TAIL_LEN : (index + 1) * TAIL_LEN] = tail
            return seeder
        endpoints += endpoint
        tails += tail
        endpoints, tails = self.role(not seeder)
        index = self._find(endpoints, endpoint)
        if index >= 0:
            self._cut(endpoints, tails, index)
            return not seeder
        return None

    def remove(self, endpoint: bytes) -> bool | None:
        """Forget a peer; its role (True: seeder) or None if it was not here."""
        for seeder in (True, False):
            endpoints, tails = self.role(seeder)
            index = self._find(endpoints, endpoint)
            if index >= 0:
                self._cut(endpoints, tails, index)
                return seeder
        return None

    def holds(self, endpoint: bytes) -> bool:
        return self._find(self.seeders, endpoint) >= 0 or self._find(self.leechers, endpoint) >= 0

    def expire(self, now: float) -> tuple[list[bytes], int, int]:
        """Drop peers expired at ``now``: (their endpoints, seeders dropped, leechers dropped)."""
        gone: list[bytes] = []
        dropped = [0, 0]
        soonest = STAMP_MAX
        width = self.width
        for role, seeder in enumerate((True, False)):
            endpoints, tails = self.role(seeder)
            stamps = [expires for _, expires in _TAIL.iter_unpack(tails)]
            live = [i for i, expires in enumerate(stamps) if expires > now]
            if live:
                soonest = min(soonest, min([stamps[i] for i in live]))
            if len(live) == len(stamps):
                continue
            gone += [bytes(endpoints[i * width : (i + 1) * width]) for i, e in enumerate(stamps) if e <= now]
            dropped[role] = len(stamps) - len(live)
            endpoints[:] = b"".join([endpoints[i * width : (i + 1) * width] for i in live])
            tails[:] = b"".join([tails[i * TAIL_LEN : (i + 1) * TAIL_LEN] for i in live])
        self.soonest = soonest
        return gone, dropped[0], dropped[1]

    def live(self, now: float) -> tuple[int, int]:
        """(seeders, leechers) not expired at ``now``."""
        if self.soonest > now:
            return len(self.seeders) // self.width, len(self.leechers) // self.width
        return (
            sum(1 for _, expires in _TAIL.iter_unpack(self.seeder_tails) if expires > now),
            sum(1 for _, expires in _TAIL.iter_unpack(self.leecher_tails) if expires > now),
        )

    def endpoints(self) -> list[bytes]:
        width = self.width
        return [bytes(e[i : i + width]) for e in (self.seeders, self.leechers) for i in range(0, len(e), width)]


class SiteSwarm(dict[tuple[str, str], PeerGroup]):
    """A torrent's peers in one site: (location, subnet) -> PeerGroup, and role counters.

    A dict subclass rather than an object holding one, because there is one per torrent and
    site: the saved object is a fair share of the memory of a small swarm.
    """

    __slots__ = ("seeders", "leechers")

    def __init__(self) -> None:
        super().__init__()
        self.seeders = 0
        self.leechers = 0

    def put(self, record: PeerRecord) -> bool:
        """Register or refresh ``record``; True when it is a new registration."""
        group = self.get(record.group)
        if group is None:
            group = self[record.group] = PeerGroup(record.group[0], len(record.endpoint))
        was = group.put(record.endpoint, record.peer_id, record.expires, record.seeder)
        if was is not None and was == record.seeder:
            return False
        if record.seeder:
            self.seeders += 1
        else:
            self.leechers += 1
        if was is None:
            return True
        if was:
            self.seeders -= 1
        else:
            self.leechers -= 1
        return False

    def has(self, record: PeerRecord) -> bool:
        group = self.get(record.group)
        return group is not None and group.holds(record.endpoint)

    def remove(self, record: PeerRecord) -> bool:
        group = self.get(record.group)
        was = group.remove(record.endpoint) if group is not None else None
        if was is None:
            return False
        if was:
            self.seeders -= 1
        else:
            self.leechers -= 1
        return True

    def expire(self, now: float) -> list[bytes]:
        """Drop expired peers and empty groups; the endpoints dropped."""
        gone: list[bytes] = []
        for key, group in list(self.items()):
            if group.soonest <= now:
                endpoints, seeders, leechers = group.expire(now)
                gone += endpoints
                self.seeders -= seeders
                self.leechers -= leechers
            if not group.seeders and not group.leechers:
                del self[key]
        return gone

    def live(self, now: float) -> tuple[int, int]:
        seeders = leechers = 0
        for group in self.values():
            s, l = group.live(now)
            seeders += s
            leechers += l
        return seeders, leechers

    def endpoints(self) -> list[bytes]:
        return [endpoint for group in self.values() for endpoint in group.endpoints()]


class PeerStore(Protocol):
    # The clock every ``now`` given to the store and every stamp in it are read from: the
    # monotonic clock where one process keeps the stamps, so a step of the wall clock neither
    # drops every peer nor keeps dead ones; shared stores need a clock all instances agree on.
    clock: Callable[[], float]

    async def announce(
        self, info_hash: bytes, site: str, record: PeerRecord, stopped: bool, now: float, per_address: int
    ) -> SiteSwarm:
        """Register (or, if ``stopped``, remove) ``record``; return the site's swarm.

        Raises PeerLimitError when a new registration would give the address more than
        ``per_address`` (0 = unlimited). The swarm is only read, right away.
        """

    async def add_completed(self, info_hash: bytes, site: str) -> None: ...

    async def counts(self, info_hash: bytes, now: float) -> dict[str, SiteCounts]:
        """Live seeders/leechers and completed downloads of a torrent, per site."""

    async def drop(self, info_hash: bytes) -> None:
        """Forget a torrent's peers (the package was retired)."""

    async def sweep(self, now: float) -> int:
        """Remove expired peers; returns how many."""

    async def peer_count(self) -> int: ...

    async def close(self) -> None: ...


class MemoryPeerStore:
    """The default store: swarms in this process, swept by the server's background task.

    One flat dict keyed by (info-hash, site): a dict per torrent would cost more than the
    peers of a small swarm. ``synchronous``: the ``*_now`` twins of the coroutine methods never
    wait, so the HTTP front can answer an announce inside one callback, without a task.
    """

    synchronous = True
    clock = staticmethod(time.monotonic)  # stamps live in this process only

    def __init__(self) -> None:
        self._swarms: dict[tuple[bytes, str], SiteSwarm] = {}
        self._sites: set[str] = set()  # every site seen, to find a torrent's swarms
        self._completed: dict[bytes, dict[str, int]] = {}
        self._per_address: dict[bytes, int] = {}  # packed address -> registrations
        self._total = 0

    def announce_now(
        self, info_hash: bytes, site: str, record: PeerRecord, stopped: bool, now: float, per_address: int
    ) -> SiteSwarm:
        key = (info_hash, site)
        swarm = self._swarms.get(key)
        if stopped:
            if swarm is None:
                return SiteSwarm()
            if swarm.remove(record):
                self._forget(record.endpoint[:-2])
            return swarm
        if swarm is None:
            swarm = self._swarms[key] = SiteSwarm()
            self._sites.add(site)
        address = record.endpoint[:-2]
        count = self._per_address.get(address, 0)
        if per_address and count >= per_address and not swarm.has(record):
            raise PeerLimitError(f"address {record.ip} already has {count} registrations")
        if swarm.put(record):
            self._per_address[address] = count + 1
            self._total += 1
        return swarm

    async def announce(
        self, info_hash: bytes, site: str, record: PeerRecord, stopped: bool, now: float, per_address: int
    ) -> SiteSwarm:
        return self.announce_now(info_hash, site, record, stopped, now, per_address)

    def _forget(self, address: bytes, number: int = 1) -> None:
        left = self._per_address.get(address, 0) - number
        if left > 0:
            self._per_address[address] = left
        else:
            self._per_address.pop(address, None)
        self._total -= number

    def add_completed_now(self, info_hash: bytes, site: str) -> None:
        per_site = self._completed.setdefault(info_hash, {})
        per_site[site] = per_site.get(site, 0) + 1

    async def add_completed(self, info_hash: bytes, site: str) -> None:
        self.add_completed_now(info_hash, site)

    def counts_now(self, info_hash: bytes, now: float) -> dict[str, SiteCounts]:
        result: dict[str, SiteCounts] = {}
        completed = self._completed.get(info_hash, {})
        for site in self._sites | set(completed):
            swarm = self._swarms.get((info_hash, site))
            if swarm is None and site not in completed:
                continue
            seeders, leechers = swarm.live(now) if swarm is not None else (0, 0)
            result[site] = SiteCounts(seeders, leechers, completed.get(site, 0))
        return result

    async def counts(self, info_hash: bytes, now: float) -> dict[str, SiteCounts]:
        return self.counts_now(info_hash, now)

    async def drop(self, info_hash: bytes) -> None:
        for site in self._sites:
            swarm = self._swarms.pop((info_hash, site), None)
            for endpoint in swarm.endpoints() if swarm is not None else ():
                self._forget(endpoint[:-2])
        self._completed.pop(info_hash, None)

    async def sweep(self, now: float) -> int:
        removed = examined = 0
        for key, swarm in list(self._swarms.items()):
            if examined >= SWEEP_BATCH:
                examined = 0
                await asyncio.sleep(0)  # a long sweep must not stall announces
                if self._swarms.get(key) is not swarm:
                    continue  # dropped meanwhile
            examined += swarm.seeders + swarm.leechers + 1
            gone = swarm.expire(now)
            if gone:
                removed += len(gone)
                for address, number in Counter(endpoint[:-2] for endpoint in gone).items():
                    self._forget(address, number)
            if not swarm:
                del self._swarms[key]
        return removed

    async def peer_count(self) -> int:
        return self._total

    async def close(self) -> None:
        self._swarms.clear()
