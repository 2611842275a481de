"""The session: one listening socket and peer id for every torrent of this process.

Inbound connections belong to the session until their handshake names an info-hash; then the
torrent takes them over (or they are closed: unknown torrent, full, banned). Global limits
(connections, upload and download rate) are shared through the session, and so is what we know
of each address: bans survive reconnects and apply to every torrent (``Strikes``, keyed by IP).

Connections over ``max_connections`` are refused as they are accepted: the protocol factory
hands asyncio a ``_Refused`` protocol that resets the socket in ``connection_made``, so an
excess connection costs neither a codec nor a descriptor beyond that moment. The address is
known only in ``connection_made``; there ``admit`` refuses banned addresses and addresses with
``max_connections_per_address`` handshakes already pending.

Time is read from ``clock`` and outbound connections are made by ``connect``, both handed to
every torrent of the session (seams for tests; by default ``time.monotonic`` and the loop's
``create_connection``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable

from p2pdist import __version__
from p2pdist.aio import stop_accepting, stop_tasks
from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.ratelimit import TokenBucket
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.targets import DialPolicy
from p2pdist.engine.dialling import Connect, tcp_connect
from p2pdist.engine.torrent import Address, Torrent
from p2pdist.errors import LocalError
from p2pdist.metainfo import Metainfo
from p2pdist.piece_picker.smartban import Strikes
from p2pdist.storage.base import Storage
from p2pdist.wire import messages as m
from p2pdist.wire.codec import PeerWire
from p2pdist.wire.state import Phase

log = logging.getLogger("p2pdist.session")


def make_peer_id() -> bytes:
    """Azureus-style id: client code and version, then random bytes (BEP 20)."""
    major, minor, *_ = (__version__.split(".") + ["0", "0"])[:3]
    prefix = f"-PD{int(major):01d}{int(minor):02d}0-".encode()[:8]
    return prefix + os.urandom(20 - len(prefix))


class _Refused(asyncio.Protocol):
    """What an accepted connection over the cap gets: reset at once, nothing allocated."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]  # a stream server's transport has abort(); the protocol types it as BaseTransport


class Session:
    def __init__(
        self,
        settings: EngineSettings = EngineSettings(),
        *,
        peer_id: bytes | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect: Connect = tcp_connect,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.connect = connect
        self.peer_id = peer_id or make_peer_id()
        self.rng = rng or random.Random()
        self.torrents: dict[bytes, Torrent] = {}
        self.upload_bucket = TokenBucket(settings.upload_rate_limit, clock=clock)
        self.download_bucket = TokenBucket(settings.download_rate_limit, clock=clock)
        self._server: asyncio.base_events.Server | None = None
        self._pending: set[PeerConnection] = set()
        self._pending_ip: dict[PeerConnection, str] = {}  # admitted pending connections' addresses
        self._pending_per_ip: dict[str, int] = {}
        self.strikes = Strikes(failures_to_ban=settings.ban_after_failures)
        self.dial_policy = DialPolicy(min_port=settings.min_peer_port, networks=settings.peer_networks)
        self.refused = 0  # connections refused at accept (over the cap, banned, per address)
        self._reaper: asyncio.Task[None] | None = None  # runs only while handshakes are pending
        self.port = 0
        # The hooks every torrent is given, bound once rather than once per torrent.
        self._can_connect = self.can_connect
        self._dial_refusal = self.dial_refusal

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(self.inbound, self.settings.listen_host, self.settings.listen_port, reuse_address=True)
        except OSError as exc:
            raise LocalError(f"peer port: cannot listen on {self.settings.listen_host}:{self.settings.listen_port}: {exc.strerror}") from None
        self.port = self._server.sockets[0].getsockname()[1]

    def inbound(self) -> asyncio.BaseProtocol:
        """The protocol for one accepted connection (the listening socket's factory; tests
        feed it in-memory streams)."""
        if self.connection_count() >= self.settings.max_connections:
            self.refused += 1
            return _Refused()
        conn = PeerConnection(
            PeerWire(peer_id=self.peer_id, runs=True), self, outbound=False, max_send_buffer=self.settings.max_send_buffer, clock=self.clock
        )
        self._pending.add(conn)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_pending())
        return conn

    def admit(self, conn: PeerConnection) -> str | None:
        """An accepted connection's address is known: refuse it now if that address may not
        have one more (banned, or too many handshakes pending from it)."""
        ip = conn.address[0] if conn.address else "?"
        if self.strikes.is_banned(ip):
            self.refused += 1
            return "banned address"
        pending = self._pending_per_ip.get(ip, 0)
        if pending >= self.settings.max_connections_per_address:
            self.refused += 1
            return "too many connections from this address"
        self._pending_per_ip[ip] = pending + 1
        self._pending_ip[conn] = ip
        return None

    def _unpend(self, conn: PeerConnection) -> None:
        self._pending.discard(conn)
        ip = self._pending_ip.pop(conn, None)
        if ip is not None:
            left = self._pending_per_ip[ip] - 1
            if left:
                self._pending_per_ip[ip] = left
            else:
                del self._pending_per_ip[ip]

    def set_site_networks(self, networks: list[str] | tuple[str, ...]) -> None:
        """The site server named this site's subnets: dial no peer outside them from now on.
        (The hook for the tracker client; an empty list lifts the site rule.)"""
        self.dial_policy = self.dial_policy.with_site_networks(networks)

    def dial_refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be dialled (see ``engine.targets``), or None."""
        return self.dial_policy.refusal(address)

    def connection_count(self) -> int:
        return len(self._pending) + sum(len(t.peers) for t in self.torrents.values())

    def can_connect(self) -> bool:
        return self.connection_count() < self.settings.max_connections

    async def add_torrent(self, meta: Metainfo, storage: Storage) -> Torrent:
        if meta.info_hash in self.torrents:
            raise LocalError(f"torrent {meta.info_hash_hex} is already in the session")
        torrent = Torrent(
            meta,
            storage,
            peer_id=self.peer_id,
            settings=self.settings,
            listen_port=self.port,
            rng=self.rng,  # one generator for all: a Random is 2.5 KiB, a thousand torrents 2.5 MiB
            upload_bucket=self.upload_bucket,
            download_bucket=self.download_bucket,
            can_connect=self._can_connect,
            strikes=self.strikes,
            dial_refusal=self._dial_refusal,
            clock=self.clock,
            connect=self.connect,
        )
        self.torrents[meta.info_hash] = torrent
        try:
            await torrent.start()
        except BaseException:
            del self.torrents[meta.info_hash]
            raise
        return torrent

    async def remove_torrent(self, info_hash: bytes) -> None:
        torrent = self.torrents.pop(info_hash, None)
        if torrent is not None:
            await torrent.stop()

    # PeerOwner for connections whose torrent is not known yet.
    def on_event(self, conn: PeerConnection, event: object) -> None:
        if not isinstance(event, m.Handshake):
            conn.close("message before handshake")
            return
        self._unpend(conn)
        torrent = self.torrents.get(event.info_hash)
        if torrent is None:
            conn.close("handshake for a torrent we do not serve")
            return
        if not torrent.attach_inbound(conn, event):
            conn.close("torrent does not accept this peer now")

    def on_blocks(self, conn: PeerConnection, run: list[tuple[int, int, memoryview]]) -> None:
        conn.close("piece before handshake")  # the unbound codec refuses this first; kept total

    def on_requests(self, conn: PeerConnection, run: list[tuple[int, int, int]]) -> None:
        conn.close("request before handshake")

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None:
        self._unpend(conn)

    # No scatter reads before a torrent owns the connection: it has requested nothing.
    direct_receive = False

    def receive_slots(self, conn: PeerConnection, limit: int) -> tuple[list[tuple[int, int, int]], list[memoryview]]:
        return [], []

    def on_placed(self, conn: PeerConnection, keys: list[tuple[int, int, int]]) -> None:
        conn.close("piece before handshake")

    async def _reap_pending(self) -> None:
        """Close inbound connections that never complete a handshake; ends when none is
        pending (the next inbound connection starts it again), so an idle session has no timer."""
        while self._pending:
            await asyncio.sleep(self.settings.tick_interval)
            now = self.clock()
            for conn in list(self._pending):
                if conn.wire.phase is Phase.AWAIT_HANDSHAKE and now - conn.connected_at > self.settings.handshake_timeout:
                    conn.close("handshake timeout")

    async def close(self) -> None:
        if self._server is not None:
            await stop_accepting(self._server)
            self._server.close()
        for conn in list(self._pending):
            conn.close("session closing")
        if self._reaper is not None:  # after the last inbound connection, which may start one
            await stop_tasks([self._reaper], owner="session")
        for info_hash in list(self.torrents):
            await self.remove_torrent(info_hash)
        if self._server is not None:
            await self._server.wait_closed()
