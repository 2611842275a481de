"""Whom a torrent dials, when, and how often it tries again.

Candidates come from the tracker or the command line; each has the earliest time it may be
dialled next. A failed dial doubles the wait (10 s, 20 s, ... up to 5 minutes); a connection
that ends waits 30 s before its address is dialled again (inbound peers call back
themselves). Seeds never dial: leechers come to them. A banned address is never dialled, nor
one ``DialPolicy`` refuses, nor more than ``max_connections_per_address`` to one IP.

The clock and the connection factory are the torrent's (seams: tests run this over a virtual
clock and in-memory streams).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from p2pdist.engine.peer import PeerConnection
from p2pdist.wire.codec import PeerWire

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent

log = logging.getLogger("p2pdist.torrent")

Address = tuple[str, int]
# (protocol factory, host, port, local address) -> once connected; raises OSError on failure.
Connect = Callable[[Callable[[], asyncio.BaseProtocol], str, int, "tuple[str, int] | None"], Awaitable[object]]

RETRY_AFTER_CLOSE = 30.0
MAX_BACKOFF = 300.0


async def tcp_connect(
    factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, local_addr: tuple[str, int] | None
) -> object:
    """The default connection factory: a TCP connection by the running loop."""
    return await asyncio.get_running_loop().create_connection(factory, host, port, local_addr=local_addr)


def backoff(failures: int) -> float:
    """Seconds to wait before dialling an address again after ``failures`` failed dials."""
    return min(MAX_BACKOFF, 5.0 * 2.0 ** min(failures, 32))


class Dialler:
    """One torrent's candidates, dials in flight and their back-off."""

    __slots__ = ("torrent", "connect", "candidates", "failures", "connecting")

    def __init__(self, torrent: Torrent, connect: Connect) -> None:
        self.torrent = torrent
        self.connect = connect
        self.candidates: dict[Address, float] = {}  # address -> earliest next attempt
        self.failures: dict[Address, int] = {}
        self.connecting: set[Address] = set()

    def add(self, addresses: Iterable[Address]) -> None:
        """Remember candidates and dial those due."""
        torrent = self.torrent
        now = torrent.clock()
        for address in addresses:
            if address in self.candidates or torrent.strikes.is_banned(address[0]):
                continue
            refusal = torrent.dial_refusal(address)
            if refusal:
                log.info("%s: not dialling %s: %s", torrent.info.name, address, refusal)
                continue
            self.candidates[address] = now
            torrent.wake()
        self.connect_more()

    def connected_addresses(self) -> set[Address]:
        return {conn.address for conn in self.torrent.peers if conn.address is not None} | self.connecting

    def per_address_full(self, ip: str) -> bool:
        """The torrent holds ``max_connections_per_address`` connections (or dials) to ``ip``."""
        return count_ips(self.connected_addresses()).get(ip, 0) >= self.torrent.settings.max_connections_per_address

    def next_due(self) -> float | None:
        """When the earliest candidate may be dialled, or None without candidates."""
        return min(self.candidates.values()) if self.candidates else None

    def connect_more(self) -> None:
        torrent = self.torrent
        if not torrent.active:
            return
        settings = torrent.settings
        now = torrent.clock()
        busy = self.connected_addresses()
        room = settings.max_peers_per_torrent - len(torrent.peers) - len(self.connecting)
        per_ip: dict[str, int] | None = None
        for address, due in list(self.candidates.items()):
            if room <= 0:
                break
            if due > now or address in busy or torrent.strikes.is_banned(address[0]):
                continue
            if torrent.seeding:
                break  # seeds wait for leechers to come to them
            if not torrent.can_connect():
                break
            if per_ip is None:
                per_ip = count_ips(busy)
            if per_ip.get(address[0], 0) >= settings.max_connections_per_address or torrent.dial_refusal(address):
                continue
            per_ip[address[0]] = per_ip.get(address[0], 0) + 1
            room -= 1
            self.connecting.add(address)
            torrent.spawn(self._dial(address))

    async def _dial(self, address: Address) -> None:
        torrent = self.torrent
        settings = torrent.settings
        wire = PeerWire(peer_id=torrent.peer_id, info_hash=torrent.info_hash, layout=torrent.layout, runs=True)
        conn = PeerConnection(
            wire, torrent, outbound=True, address=address, max_send_buffer=settings.max_send_buffer, clock=torrent.clock
        )
        local_addr = (settings.bind_host, 0) if settings.bind_host else None
        try:
            async with asyncio.timeout(settings.connect_timeout):
                await self.connect(lambda: conn, address[0], address[1], local_addr)
        except (OSError, TimeoutError) as exc:
            failures = self.failures.get(address, 0) + 1
            self.failures[address] = failures
            self.candidates[address] = torrent.clock() + backoff(failures)
            log.debug("%s: connect to %s failed: %s", torrent.info.name, address, exc)
            return
        finally:
            self.connecting.discard(address)
        if conn.closed:
            return  # ended during the handshake (duplicate, protocol error) before we got here
        if not torrent.active:
            conn.close("torrent not active")
            return
        self.failures.pop(address, None)
        torrent.peers.add(conn)
        torrent.wake()

    def disconnected(self, conn: PeerConnection) -> None:
        if conn.outbound and conn.address in self.candidates:
            self.candidates[conn.address] = self.torrent.clock() + RETRY_AFTER_CLOSE

    def forget_ip(self, ip: str) -> None:
        """``ip`` is banned: dial none of its addresses again."""
        for address in [a for a in self.candidates if a[0] == ip]:
            del self.candidates[address]


def count_ips(addresses: Iterable[Address]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for host, _ in addresses:
        counts[host] = counts.get(host, 0) + 1
    return counts
