"""Where the tracker keeps its peers: the interface and the in-memory default.

A store holds, per torrent and site, one record per endpoint (address, port): a client that
restarts with a new peer id replaces its old record instead of showing up twice. One call per
announce both registers the peer and returns the site's peers, so the Redis twin can do it in
one round trip. Stores never decide who meets whom; ``swarm.Tracker`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from p2pdist.errors import RemoteError


class StoreError(RemoteError):
    """The shared peer store (Redis) could not be reached or failed; the request is answered
    with a retry-later failure and the next one tries again."""


class PeerLimitError(RemoteError):
    """An address already has as many registrations as the tracker allows."""


class PeerRecord(NamedTuple):
    """One registered endpoint; a tuple because a busy tracker makes one per announce."""

    ip: str
    port: int
    peer_id: bytes
    seeder: bool
    location: str
    subnet: str
    expires: float


@dataclass(frozen=True)
class SiteCounts:
    seeders: int = 0
    leechers: int = 0
    completed: int = 0


class PeerStore(Protocol):
    async def announce(
        self, info_hash: bytes, site: str, record: PeerRecord, stopped: bool, now: float, per_address: int
    ) -> list[PeerRecord]:
        """Register (or, if ``stopped``, remove) ``record``; return the site's live peers.

        Raises PeerLimitError when a new registration would give the address more than
        ``per_address`` (0 = unlimited).
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


SiteSwarm = dict[tuple[str, int], PeerRecord]


class MemoryPeerStore:
    """The default store: dictionaries in this process, swept by the server's background task."""

    def __init__(self) -> None:
        self._swarms: dict[bytes, dict[str, SiteSwarm]] = {}
        self._completed: dict[bytes, dict[str, int]] = {}
        self._per_address: dict[str, int] = {}
        self._total = 0

    async def announce(
        self, info_hash: bytes, site: str, record: PeerRecord, stopped: bool, now: float, per_address: int
    ) -> list[PeerRecord]:
        key = (record.ip, record.port)
        sites = self._swarms.get(info_hash)
        peers = sites.get(site) if sites is not None else None
        if stopped:
            if peers is not None and peers.pop(key, None) is not None:
                self._forget(record.ip)
            return list(peers.values()) if peers else []
        if peers is None:
            peers = self._swarms.setdefault(info_hash, {}).setdefault(site, {})
        if key not in peers:
            count = self._per_address.get(record.ip, 0)
            if per_address and count >= per_address:
                raise PeerLimitError(f"address {record.ip} already has {count} registrations")
            self._per_address[record.ip] = count + 1
            self._total += 1
        peers[key] = record
        return list(peers.values())

    def _forget(self, ip: str, number: int = 1) -> None:
        left = self._per_address.get(ip, 0) - number
        if left > 0:
            self._per_address[ip] = left
        else:
            self._per_address.pop(ip, None)
        self._total -= number

    async def add_completed(self, info_hash: bytes, site: str) -> None:
        per_site = self._completed.setdefault(info_hash, {})
        per_site[site] = per_site.get(site, 0) + 1

    async def counts(self, info_hash: bytes, now: float) -> dict[str, SiteCounts]:
        result: dict[str, SiteCounts] = {}
        completed = self._completed.get(info_hash, {})
        sites = self._swarms.get(info_hash, {})
        for site in set(sites) | set(completed):
            live = [p for p in sites.get(site, {}).values() if p.expires > now]
            seeders = sum(1 for p in live if p.seeder)
            result[site] = SiteCounts(seeders, len(live) - seeders, completed.get(site, 0))
        return result

    async def drop(self, info_hash: bytes) -> None:
        for peers in self._swarms.pop(info_hash, {}).values():
            for record in peers.values():
                self._forget(record.ip)
        self._completed.pop(info_hash, None)

    async def sweep(self, now: float) -> int:
        removed = 0
        for info_hash in list(self._swarms):
            sites = self._swarms[info_hash]
            for site in list(sites):
                peers = sites[site]
                stale = [key for key, record in peers.items() if record.expires <= now]
                for key in stale:
                    self._forget(peers.pop(key).ip)
                removed += len(stale)
                if not peers:
                    del sites[site]
            if not sites:
                del self._swarms[info_hash]
        return removed

    async def peer_count(self) -> int:
        return self._total

    async def close(self) -> None:
        self._swarms.clear()
