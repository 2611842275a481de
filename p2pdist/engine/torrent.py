"""One torrent's swarm: peers, requests, verification, choking, uploads.

Theory of operation
-------------------
Decisions are made by pure parts and applied here. The piece picker says which blocks to
request from whom, the choker says whom to upload to, storage says whether a piece verified.
This class turns wire events into calls on those parts and their answers into messages.

Receive path (the hot one): the codec hands over a socket read's piece messages as one run;
the picker takes the run in one call and each block is copied into its piece's assembly buffer
(pooled). When the picker says a piece is whole, the buffer goes to storage, which hashes and
writes it in one worker-thread hop; a done-callback then settles it, and only then is it
announced with ``have`` and ever served. Requests are refilled in batches when a peer's pipeline
falls below three quarters of its target, and the target follows the measured rate (about one
second of data in flight, doubled whenever the pipeline ran dry), within the peer's ``reqq``.

Upload path: requests arrive as runs too and join the peer's queue; the upload loop slices up
to ``UPLOAD_BATCH`` blocks from pieces in memory without copying and writes them, headers
framed by the codec, in one call.

A piece that fails its hash goes back to the picker. Its blocks' digests are kept with the
addresses that sent them; when the piece later verifies, the smart-ban ledger names the
addresses whose blocks differed, and those are banned. An address that sent at least half of a
failed piece gets a strike (``Strikes``, shared by the session's torrents). Evidence, strikes and
bans are per IP address, not per connection, so reconnecting wipes nothing.

What one peer can make us hold is bounded: its requests (the codec's caps; the upload queue is
compacted to the requests still owed when repetitions or cancels pile up in it), what waits in
its send buffer (``PeerConnection.max_send_buffer``), its receive buffer (the codec's, fixed),
and its share of the slots (``max_connections_per_address``).

Periodic work runs in one tick per second (rates, timeouts, snubbing, keep-alives, new
connections) and one choke round every ``choke_interval``, rather than a timer per peer; both
loops run only while there is work for them (``_wake``), so an idle seed costs nothing.
Left out on purpose: PEX, DHT and metadata exchange (private torrents, BEP 27), uTP, encryption.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, groupby, islice, repeat
from operator import floordiv, itemgetter

from p2pdist.aio import Flag, stop_tasks
from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.ratelimit import RateMeter, Throttle, TokenBucket
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.targets import DialPolicy
from p2pdist.bitfield import Bitfield
from p2pdist.errors import LocalError
from p2pdist.metainfo import BLOCK_SIZE, Layout, Metainfo
from p2pdist.piece_picker.choker import ChokerState, PeerStats, decide
from p2pdist.piece_picker.picker import TAKEN, Block, PiecePicker
from p2pdist.piece_picker.smartban import SmartBan, Strikes
from p2pdist.storage.base import Storage, StorageError
from p2pdist.wire import messages as m
from p2pdist.wire import fetching
from p2pdist.wire.codec import PeerWire
from p2pdist.wire.state import Phase

log = logging.getLogger("p2pdist.torrent")

Address = tuple[str, int]
POOL_BYTES = 32 << 20
UPLOAD_BATCH = 32  # blocks per socket write when they are in memory (512 KiB)


class TorrentState(enum.Enum):
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    STOPPED = "stopped"
    ERROR = "error"


class Torrent:
    """A torrent being downloaded or seeded by this process."""

    def __init__(
        self,
        meta: Metainfo,
        storage: Storage,
        *,
        peer_id: bytes,
        settings: EngineSettings = EngineSettings(),
        listen_port: int = 0,
        rng: random.Random | None = None,
        upload_bucket: TokenBucket | None = None,
        download_bucket: TokenBucket | None = None,
        can_connect: Callable[[], bool] = lambda: True,
        strikes: Strikes | None = None,
        dial_refusal: Callable[[Address], str | None] | None = None,
    ) -> None:
        self.meta = meta
        self.info = meta.info
        self.info_hash = meta.info_hash
        self.layout = storage.layout if storage.info is meta.info else Layout(meta.info)  # one per torrent
        self.storage = storage
        self.peer_id = peer_id
        self.settings = settings
        self.listen_port = listen_port
        self.rng = rng or random.Random()
        self.state = TorrentState.CHECKING
        self.error: str | None = None
        self.disk_full = False  # the error is a full disk (or quota): room coming back fixes it
        self.picker: PiecePicker | None = None
        self.peers: set[PeerConnection] = set()
        self._peer_ids: dict[bytes, PeerConnection] = {}
        self._connecting: set[Address] = set()
        self._candidates: dict[Address, float] = {}  # address -> earliest next attempt
        self._failures: dict[Address, int] = {}
        self._strikes = strikes or Strikes(failures_to_ban=settings.ban_after_failures)
        self._dial_refusal = dial_refusal or DialPolicy(min_port=settings.min_peer_port, networks=settings.peer_networks).refusal
        self._partial: dict[int, bytearray] = {}
        self._buffer_views: dict[int, list[memoryview]] = {}  # id(buffer) -> its block views
        self._web_claims: dict[int, tuple[PeerConnection, float]] = {}  # piece -> (peer, until)
        self._own_claims: set[int] = set()  # pieces we said we fetch from the web seed
        self.tracker_answered = False  # set by the tracker client after its first answer
        self._buffer_pool: list[bytearray] = []
        self._failed_pieces: set[int] = set()
        self._smartban = SmartBan()
        self._choker_state = ChokerState()
        self._upload = Throttle(
            upload_bucket or TokenBucket(settings.upload_rate_limit), TokenBucket.of(settings.torrent_upload_rate_limit)
        )
        self._download = Throttle(
            download_bucket or TokenBucket(settings.download_rate_limit), TokenBucket.of(settings.torrent_download_rate_limit)
        )
        self._can_connect = can_connect
        self.download_meter = RateMeter()
        self.upload_meter = RateMeter()
        self.bytes_from_peers = 0
        self.bytes_from_webseed = 0
        self.bytes_wasted = 0
        self.first_block_at: float | None = None  # monotonic time of the first payload byte
        self.hash_failures = 0
        self.completed = Flag()
        self.stopped = Flag()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resume_dirty = False
        self._last_resume = time.monotonic()
        # The tick and choke loops run only while there is work (see ``_wake``): an idle torrent
        # has no task and no timer, so an agent seeding a thousand packages to nobody sleeps.
        self._ticking = False
        self._choking = False
        self._wake_timer: asyncio.TimerHandle | None = None  # a download's next candidate due
        self._listeners: list[Callable[[str], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Check existing data, then begin swarming."""
        try:
            have = await self.storage.start(progress)
        except StorageError as exc:
            self._set_error(str(exc), disk_full=exc.disk_full)
            raise
        self.picker = PiecePicker(self.layout, rng=self.rng, have=have)
        if self.picker.complete:
            await self._finish_storage()
            self.state = TorrentState.SEEDING
            self.completed.set()
        else:
            self.state = TorrentState.DOWNLOADING
        self._wake()
        self._emit("started")

    async def stop(self) -> None:
        if self.state is TorrentState.STOPPED:
            return
        self.state = TorrentState.STOPPED
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        for conn in list(self.peers):
            conn.close("torrent stopped")
        self._buffer_views.clear()
        self._buffer_pool.clear()
        await stop_tasks(self._tasks, owner=self.info.name)
        try:
            await self.storage.save_resume()
        except StorageError as exc:
            log.warning("%s: could not save resume data: %s", self.info.name, exc)
        await self.storage.close()
        self.stopped.set()
        self._emit("stopped")

    def add_listener(self, callback: Callable[[str], None]) -> None:
        """``callback(event)`` for "started", "awake" (idle no more), "completed", "stopped", "error"."""
        self._listeners.append(callback)

    def _emit(self, event: str) -> None:
        for callback in self._listeners:
            try:
                callback(event)
            except Exception:  # a listener's bug must not stop the torrent
                log.exception("torrent listener failed on %s", event)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed", self.info.name, exc_info=task.exception())

    def _stop_requesting(self) -> None:
        """Cancel every request in flight and lose interest: blocks we cannot store are waste."""
        assert self.picker is not None
        for conn in list(self.peers):
            if conn.closed or conn.have is None:
                continue
            chunks = self._withdraw_requests(conn, cancel=True)
            if conn.wire.am_interested:
                chunks.append(conn.wire.send(m.NotInterested()))
            conn.writelines(chunks)

    def _withdraw_requests(self, conn: PeerConnection, *, cancel: bool) -> list[bytes]:
        """Give every block requested from ``conn`` back to the picker; with ``cancel``, the
        ``cancel`` messages for those still on the wire (the caller writes them)."""
        assert self.picker is not None
        chunks = []
        for block in list(self.picker.requested_from(conn)):
            self.picker.block_lost(conn, block)
            if cancel and (block.index, block.begin, block.length) in conn.wire.requests_out:
                chunks.append(conn.wire.send(m.Cancel(block.index, block.begin, block.length)))
        return chunks

    def _set_error(self, message: str, *, disk_full: bool = False) -> None:
        self.state = TorrentState.ERROR
        self.error = message
        self.disk_full = disk_full
        log.error("%s: %s", self.info.name, message)
        self._emit("error")

    @property
    def banned(self) -> frozenset[str]:
        """Addresses banned for bad data (by any torrent sharing our ``Strikes``)."""
        return self._strikes.banned  # type: ignore[return-value]

    @property
    def have(self) -> Bitfield:
        assert self.picker is not None
        return self.picker.have

    @property
    def left(self) -> int:
        """Bytes still missing (what the tracker's ``left`` means)."""
        if self.picker is None:
            return self.info.total_length
        have = self.picker.have
        if have.all():
            return 0
        missing = self.info.num_pieces - have.count
        last = self.info.num_pieces - 1
        left = missing * self.info.piece_length
        if not have[last]:
            left -= self.info.piece_length - self.layout.piece_size(last)
        return left

    @property
    def busy(self) -> bool:
        """It has work (peers, dials, unsaved progress); an idle torrent does nothing at all."""
        return self._ticking

    @property
    def progress(self) -> float:
        return 1.0 - self.left / self.info.total_length

    # -- peers -----------------------------------------------------------------------------

    def add_peer_addresses(self, addresses: Iterable[Address]) -> None:
        """Remember candidates (from the tracker or the command line) and connect soon."""
        now = time.monotonic()
        for address in addresses:
            if address in self._candidates or self._strikes.is_banned(address[0]):
                continue
            refusal = self._dial_refusal(address)
            if refusal:
                log.info("%s: not dialling %s: %s", self.info.name, address, refusal)
                continue
            self._candidates[address] = now
            self._wake()
        self._connect_more()

    def _connected_addresses(self) -> set[Address]:
        return {conn.address for conn in self.peers if conn.address is not None} | self._connecting

    def _connect_more(self) -> None:
        if self.state not in (TorrentState.DOWNLOADING, TorrentState.SEEDING):
            return
        now = time.monotonic()
        busy = self._connected_addresses()
        room = self.settings.max_peers_per_torrent - len(self.peers) - len(self._connecting)
        per_ip: dict[str, int] | None = None
        for address, due in list(self._candidates.items()):
            if room <= 0:
                break
            if due > now or address in busy or self._strikes.is_banned(address[0]):
                continue
            if self.state is TorrentState.SEEDING:
                break  # seeds wait for leechers to come to them
            if not self._can_connect():
                break
            if per_ip is None:
                per_ip = _count_ips(busy)
            if per_ip.get(address[0], 0) >= self.settings.max_connections_per_address or self._dial_refusal(address):
                continue
            per_ip[address[0]] = per_ip.get(address[0], 0) + 1
            room -= 1
            self._connecting.add(address)
            self._spawn(self._connect(address))

    async def _connect(self, address: Address) -> None:
        loop = asyncio.get_running_loop()
        wire = PeerWire(peer_id=self.peer_id, info_hash=self.info_hash, layout=self.layout, runs=True)
        conn = PeerConnection(wire, self, outbound=True, address=address, max_send_buffer=self.settings.max_send_buffer)
        local_addr = (self.settings.bind_host, 0) if self.settings.bind_host else None
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await loop.create_connection(lambda: conn, address[0], address[1], local_addr=local_addr)
        except (OSError, TimeoutError) as exc:
            failures = self._failures.get(address, 0) + 1
            self._failures[address] = failures
            self._candidates[address] = time.monotonic() + min(300.0, 5.0 * 2**failures)
            log.debug("%s: connect to %s failed: %s", self.info.name, address, exc)
            return
        finally:
            self._connecting.discard(address)
        if conn.closed:
            return  # ended during the handshake (duplicate, protocol error) before we got here
        if self.state not in (TorrentState.DOWNLOADING, TorrentState.SEEDING):
            conn.close("torrent not active")
            return
        self._failures.pop(address, None)
        self.peers.add(conn)
        self._wake()

    def attach_inbound(self, conn: PeerConnection, handshake: m.Handshake) -> bool:
        """Take over an inbound connection whose handshake named this torrent."""
        if self.state not in (TorrentState.DOWNLOADING, TorrentState.SEEDING):
            return False
        if conn.address and self._strikes.is_banned(conn.address[0]):
            return False
        if len(self.peers) >= self.settings.max_peers_per_torrent:
            return False
        if conn.address and _count_ips(self._connected_addresses()).get(conn.address[0], 0) >= self.settings.max_connections_per_address:
            return False
        conn.wire.bind(self.layout, self.info_hash)
        conn.owner = self
        conn.write(conn.wire.handshake())
        self.peers.add(conn)
        self._wake()
        self._on_handshake(conn, handshake)
        return not conn.closed

    # -- events ----------------------------------------------------------------------------

    @functools.cached_property
    def _dispatch(self) -> dict[type, Callable[[PeerConnection, object], None]]:
        """Wire event type -> handler, made on the first message: a seed nobody visits never
        needs its nineteen bound methods."""
        return {
            m.Handshake: self._on_handshake,
            m.ExtendedHandshake: self._on_extended_handshake,
            m.BitfieldMessage: self._on_bitfield,
            m.HaveAll: self._on_have_all,
            m.HaveNone: self._on_have_none,
            m.Have: self._on_have,
            m.Choke: self._on_choke,
            m.Unchoke: self._on_unchoke,
            m.Interested: self._on_interested,
            m.NotInterested: self._ignore,
            m.Piece: self._on_piece,
            m.Request: self._on_request,
            m.Cancel: self._ignore,  # the codec forgets the request; the upload loop skips it
            m.Reject: self._on_reject,
            m.AllowedFast: self._on_allowed_fast,
            m.Suggest: self._ignore,
            m.Port: self._ignore,  # DHT port: private torrents use no DHT
            m.Extended: self._on_extended,
            m.KeepAlive: self._ignore,
        }

    def on_event(self, conn: PeerConnection, event: object) -> None:
        self._dispatch[type(event)](conn, event)

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None:
        self.peers.discard(conn)
        if conn.wire.peer_handshake is not None and self._peer_ids.get(conn.wire.peer_handshake.peer_id) is conn:
            del self._peer_ids[conn.wire.peer_handshake.peer_id]
        if self.picker is not None and conn.have is not None:
            self.picker.remove_peer(conn)
        if conn.outbound and conn.address in self._candidates:
            self._candidates[conn.address] = time.monotonic() + 30.0  # inbound peers call back themselves
        if self.state is TorrentState.DOWNLOADING:
            self._refill_all()

    def _ignore(self, conn: PeerConnection, event: object) -> None:
        return None

    def _on_handshake(self, conn: PeerConnection, event: object) -> None:
        handshake: m.Handshake = event  # type: ignore[assignment]
        other = self._peer_ids.get(handshake.peer_id)
        if other is not None and other is not conn:
            # Two peers that dial each other at once must agree on which connection survives:
            # the one opened by the smaller peer id, decided the same way on both ends.
            keep_outbound = self.peer_id < handshake.peer_id
            if conn.outbound == other.outbound or conn.outbound != keep_outbound:
                conn.close("duplicate connection to the same peer")
                return
            other.close("duplicate connection to the same peer (simultaneous open)")
        self._peer_ids[handshake.peer_id] = conn
        conn.download_meter = RateMeter()
        conn.upload_meter = RateMeter()
        self._retarget(conn, self.settings.min_request_queue * 2)
        chunks = []
        if conn.wire.extensions:
            chunks.append(
                conn.wire.extension_handshake(
                    client=self.settings.client_name, listen_port=self.listen_port or None, extensions={fetching.NAME: fetching.LOCAL_ID}
                )
            )
        have = self.have
        if conn.wire.fast and have.all():
            chunks.append(conn.wire.send(m.HaveAll()))
        elif conn.wire.fast and not have.any():
            chunks.append(conn.wire.send(m.HaveNone()))
        else:
            chunks.append(conn.wire.send(m.BitfieldMessage(have.copy())))
        conn.writelines(chunks)

    def _on_extended_handshake(self, conn: PeerConnection, event: object) -> None:
        handshake: m.ExtendedHandshake = event  # type: ignore[assignment]
        if handshake.reqq:
            self._retarget(conn, conn.queue_target)
        if self._own_claims:  # a newcomer learns what we are fetching from the web seed now
            have = self.have
            self._own_claims = {i for i in self._own_claims if not have[i]}
            self._send_claims(conn, sorted(self._own_claims))

    def _peer_reqq(self, conn: PeerConnection) -> int:
        ext = conn.wire.peer_extension_handshake
        reqq = ext.reqq if ext is not None and ext.reqq else 250  # libtorrent's conservative default
        return min(reqq, self.settings.max_request_queue)

    def _describe_peer(self, conn: PeerConnection, field: Bitfield | None, *, has_all: bool = False) -> None:
        assert self.picker is not None
        if conn.have is not None:
            raise LocalError("peer described twice")  # the codec's phase table prevents this
        conn.have = Bitfield.full(self.info.num_pieces) if has_all else (field or Bitfield(self.info.num_pieces))
        conn.is_seed = conn.have.all()
        self.picker.add_peer(conn, None if has_all else conn.have, has_all=has_all)
        if conn.is_seed and self.picker.complete:
            conn.close("both are seeds")
            return
        self._update_interest(conn)

    def _on_bitfield(self, conn: PeerConnection, event: object) -> None:
        field = event.bitfield  # type: ignore[attr-defined]
        if field.all():
            self._describe_peer(conn, None, has_all=True)
        else:
            self._describe_peer(conn, field)

    def _on_have_all(self, conn: PeerConnection, event: object) -> None:
        self._describe_peer(conn, None, has_all=True)

    def _on_have_none(self, conn: PeerConnection, event: object) -> None:
        self._describe_peer(conn, None)

    def _on_have(self, conn: PeerConnection, event: object) -> None:
        assert self.picker is not None
        index = event.index  # type: ignore[attr-defined]
        if conn.have is None:
            self._describe_peer(conn, None)
            if conn.closed:
                return
        assert conn.have is not None
        if not conn.have.set(index):
            return
        self.picker.peer_has(conn, index)
        if conn.have.all():
            conn.is_seed = True
            if self.picker.complete:
                conn.close("both are seeds")
                return
        if not conn.wire.am_interested and not self.picker.have[index]:
            self._update_interest(conn)
        elif not conn.wire.peer_choking:
            self._refill(conn)

    def _update_interest(self, conn: PeerConnection) -> None:
        assert self.picker is not None
        if conn.closed or conn.have is None:
            return
        interesting = not self.picker.complete and self.picker.is_interesting(conn)
        if interesting and not conn.wire.am_interested:
            conn.write(conn.wire.send(m.Interested()))
        elif not interesting and conn.wire.am_interested:
            conn.write(conn.wire.send(m.NotInterested()))
        if interesting:
            self._refill(conn)

    def _on_choke(self, conn: PeerConnection, event: object) -> None:
        assert self.picker is not None
        if not conn.wire.fast and conn.have is not None:
            # Without the fast extension a choke drops every request we had with this peer.
            self._withdraw_requests(conn, cancel=False)
            self._refill_all(exclude=conn)

    def _on_unchoke(self, conn: PeerConnection, event: object) -> None:
        self._refill(conn)

    def _on_allowed_fast(self, conn: PeerConnection, event: object) -> None:
        return None  # we do not request while choked; unchoke rounds are short on a LAN

    def _on_extended(self, conn: PeerConnection, event: object) -> None:
        if event.ext_id != fetching.LOCAL_ID:  # type: ignore[attr-defined]
            return  # we advertise no other extension, so nothing else is meant for us
        index = fetching.decode_payload(event.payload, self.info.num_pieces)  # type: ignore[attr-defined]
        if not self.have[index]:
            self._web_claims[index] = (conn, time.monotonic() + fetching.CLAIM_TTL)

    def claim_web_piece(self, index: int) -> None:
        """Tell the peers that we fetch ``index`` from the web seed now (p2pdist_fetching), so
        the PCs of a branch pull each piece over the WAN once."""
        self._web_claims.pop(index, None)
        self._own_claims.add(index)
        for conn in self.peers:
            self._send_claims(conn, [index])

    def _send_claims(self, conn: PeerConnection, pieces: Iterable[int]) -> None:
        ext = conn.wire.peer_extension_handshake
        if conn.closed or conn.is_seed or ext is None or conn.wire.phase is Phase.CLOSED:
            return
        peer_id = ext.extensions.get(fetching.NAME)
        if peer_id:
            conn.writelines(
                [conn.wire.send(m.Extended(peer_id, fetching.encode_payload(i))) for i in pieces if conn.have is None or not conn.have[i]]
            )

    def web_fetchers(self) -> set[bytes]:
        """Peer ids of the connected peers with a live web-seed claim (fetching right now)."""
        now = time.monotonic()
        return {
            conn.wire.peer_handshake.peer_id
            for index, (conn, until) in self._web_claims.items()
            if _claim_live(index, conn, until, now) and conn.wire.peer_handshake is not None
        }

    def peers_settled(self) -> bool:
        """The tracker answered, every peer it named was dialled, and every connected peer has
        said what it has: from here on, what no peer has must come from elsewhere."""
        if not self.tracker_answered or self._connecting:
            return False
        return all(conn.have is not None or conn.closed for conn in self.peers)

    def claimed_elsewhere(self, index: int) -> bool:
        """A connected peer said it fetches ``index`` from the web seed, and has not finished."""
        claim = self._web_claims.get(index)
        if claim is None:
            return False
        if not _claim_live(index, *claim, time.monotonic()):
            del self._web_claims[index]
            return False
        return True

    def _on_interested(self, conn: PeerConnection, event: object) -> None:
        # Fill a free upload slot at once rather than waiting up to a whole choke round.
        unchoked = sum(1 for peer in self.peers if not peer.wire.am_choking)
        if conn.wire.am_choking and unchoked < self.settings.upload_slots and self.have.any():
            conn.write(conn.wire.send(m.Unchoke()))

    def _on_reject(self, conn: PeerConnection, event: object) -> None:
        assert self.picker is not None
        block = Block(event.index, event.begin, event.length)  # type: ignore[attr-defined]
        self.picker.block_lost(conn, block)  # a no-op unless the block was outstanding with conn
        if not conn.wire.peer_choking:
            self._refill(conn)

    # -- downloading -----------------------------------------------------------------------

    def _refill(self, conn: PeerConnection) -> None:
        """Top up this peer's request pipeline in one write, if it fell low enough."""
        picker = self.picker
        if picker is None or conn.closed or conn.have is None or conn.wire.peer_choking or picker.complete:
            return
        if self.state is not TorrentState.DOWNLOADING:
            return
        in_flight = len(conn.wire.requests_out)
        if in_flight > conn.refill_at:
            return
        blocks = picker.pick(conn, conn.queue_target - in_flight)
        if blocks:
            conn.write(conn.wire.send_requests(blocks))

    def _refill_all(self, exclude: PeerConnection | None = None) -> None:
        for conn in list(self.peers):
            if conn is not exclude:
                self._refill(conn)

    def on_blocks(self, conn: PeerConnection, run: list[tuple[int, int, memoryview]]) -> None:
        """Blocks from a peer, as the codec's borrowed run of ``(index, begin, data)``.

        The hot path: 65 536 blocks per GiB, about fifteen per socket read at full speed. The
        picker takes the run in one call; per block there is one copy into the piece buffer;
        counters, snub state, slow start and the request refill are settled once per run.
        """
        self._received(conn, run, *self._take_run(conn, run))

    def on_placed(self, conn: PeerConnection, keys: list[tuple[int, int, int]]) -> None:
        """Blocks the driver read straight into the slots ``receive_slots`` gave it, as
        ``(index, begin, length)``: the same settlement as ``on_blocks``, without the copy and,
        through ``take_sole_run``, without a ledger step per block."""
        answers = self.picker.take_sole_run(conn, keys)  # type: ignore[union-attr]
        total = sum(map(itemgetter(2), keys))
        got = sum(map(itemgetter(2), compress(keys, answers)))  # None for a block not taken
        for position in [n for n, answer in enumerate(answers) if answer is not TAKEN and answer is not None]:
            index = keys[position][0]
            buffer = self._partial.get(index)
            if buffer is None:  # cannot happen: its slot came from this piece's buffer
                log.error("%s: piece %d lost its buffer while blocks were read into it", self.info.name, index)
                buffer = self._start_piece(index)
            self._settle_block(index, buffer, answers[position])  # type: ignore[arg-type]
        self._received(conn, keys, got, total - got)

    @property
    def direct_receive(self) -> bool:
        """Whether peer drivers may read blocks straight into ``receive_slots``."""
        return self.settings.direct_receive

    def receive_slots(self, conn: PeerConnection, limit: int) -> tuple[list[tuple[int, int, int]], list[memoryview]]:
        """Where the next blocks ``conn`` sends belong, in the order we requested them, so its
        driver can read them straight into their piece buffers (no copy per block): their keys
        and, in the same order, their slots.

        Only blocks requested from this peer alone and not received yet: nothing else may write
        those bytes, and their piece cannot be complete, so no buffer being hashed or written is
        ever a target. The lists stop at the first block that does not qualify.
        """
        picker = self.picker
        if picker is None or self.state is not TorrentState.DOWNLOADING or conn.closed:
            return [], []
        keys = list(islice(conn.wire.requests_out, limit))
        del keys[picker.sole_requests(conn, keys, limit) :]
        slots: list[memoryview] = []
        for index, run in groupby(keys, key=itemgetter(0)):
            views = self._block_views(index)
            slots += map(views.__getitem__, map(floordiv, map(itemgetter(1), run), repeat(BLOCK_SIZE)))
        return keys, slots

    def _block_views(self, index: int) -> list[memoryview]:
        """A view of each block of piece ``index``'s buffer, for scatter reads.

        Made once per buffer, not per planned read or per piece: buffers come back from the
        pool, and so do their views (``_buffer_views``, keyed by ``id(buffer)``; the views keep
        the buffer alive, so the id cannot be reused while its entry exists). An entry goes
        when ``_recycle`` does not keep its buffer, and with the torrent (``stop``).
        """
        buffer = self._partial.get(index)
        if buffer is None:
            buffer = self._start_piece(index)
        views = self._buffer_views.get(id(buffer))
        if views is None:
            view = memoryview(buffer)
            starts = range(0, len(buffer), BLOCK_SIZE)
            views = self._buffer_views[id(buffer)] = list(map(view.__getitem__, map(slice, starts, map(BLOCK_SIZE.__add__, starts))))
        return views

    def _received(self, conn: PeerConnection, run: Sequence[object], got: int, wasted: int) -> None:
        """Counters, snub state, slow start and the refill, once per run."""
        total = got + wasted
        conn.last_block = conn.last_received
        conn.snubbed = False
        conn.download_meter.total += total  # type: ignore[union-attr]
        self.download_meter.total += total
        self.bytes_from_peers += got
        self.bytes_wasted += wasted
        if self._download.limited:
            self._throttle_download(conn, total)
        # Slow start: each time a whole queue's worth of blocks has arrived, double the queue,
        # so a fast link reaches a full pipeline within a few hundred blocks; the tick trims it
        # back to about one second of data for slower peers.
        conn.blocks_since_growth += len(run)
        if conn.blocks_since_growth >= conn.queue_target:
            conn.blocks_since_growth = 0
            self._retarget(conn, conn.queue_target * 2)
        if len(conn.wire.requests_out) <= conn.refill_at:
            self._refill(conn)

    def _on_piece(self, conn: PeerConnection, event: object) -> None:
        """A piece event from a codec that does not lend its buffer (the engine's own do)."""
        self.on_blocks(conn, [(event.index, event.begin, event.data)])  # type: ignore[attr-defined]

    def _retarget(self, conn: PeerConnection, target: int) -> None:
        """Set how many requests to keep in flight with ``conn`` (within our cap and its reqq)
        and the low-water mark below which the pipeline is topped up in one batch."""
        conn.queue_target = max(1, min(target, self._peer_reqq(conn)))
        conn.refill_at = conn.queue_target * 3 // 4

    def _take_run(self, source: object, run: Sequence[tuple[int, int, bytes | memoryview]]) -> tuple[int, int]:
        """Put the blocks of a run from one source (peer or web seed) into their pieces: one
        picker call, one copy per block. Returns (bytes taken, bytes not wanted)."""
        answers = self.picker.take_blocks(source, run)  # type: ignore[union-attr]
        partial = self._partial
        got = wasted = 0
        current, buffer = -1, None
        for (index, begin, data), taken in zip(run, answers):
            size = len(data)
            if taken is None:
                wasted += size  # a late duplicate (endgame) or a piece already verified
                continue
            got += size
            if index != current:
                current, buffer = index, partial.get(index)
                if buffer is None:
                    buffer = self._start_piece(index)
            buffer[begin : begin + size] = data  # type: ignore[index]
            if taken is not TAKEN:
                self._settle_block(index, buffer, taken)  # type: ignore[arg-type]
                current = -1  # a whole piece leaves the assembly; look up the next afresh
        return got, wasted

    def _start_piece(self, index: int) -> bytearray:
        buffer = self._partial[index] = self._new_buffer(index)
        if self.first_block_at is None:
            self.first_block_at = time.monotonic()
        return buffer

    def _settle_block(self, index: int, buffer: bytearray, taken: tuple[bool, Sequence[tuple[object, Block]]]) -> None:
        """Cancel the block's duplicate requests (endgame); verify the piece once it is whole."""
        done, cancels = taken
        for other, dup in cancels:
            if isinstance(other, PeerConnection) and not other.closed:
                other.write(other.wire.send(m.Cancel(dup.index, dup.begin, dup.length)))
        if done:
            del self._partial[index]
            try:
                stored = self.storage.submit_piece(index, buffer)
            except StorageError as exc:
                self._recycle(buffer)
                self._storage_failed(index, exc)
                return
            stored.add_done_callback(functools.partial(self._piece_stored, index, buffer))

    def deliver_webseed_block(self, source: object, index: int, begin: int, data: bytes | memoryview) -> bool:
        """A block fetched over HTTP (BEP 19); counted apart from peer bytes (the WAN savings)."""
        self.download_meter.add(len(data))
        if self._take_run(source, [(index, begin, data)])[0]:
            self.bytes_from_webseed += len(data)
            return True
        self.bytes_wasted += len(data)
        return False

    def _new_buffer(self, index: int) -> bytearray:
        """A piece assembly buffer, reused when possible: fresh megabyte buffers cost page faults."""
        size = self.layout.piece_size(index)
        if size == self.info.piece_length and self._buffer_pool:
            return self._buffer_pool.pop()
        return bytearray(size)

    def _recycle(self, buffer: bytearray) -> None:
        """Every buffer the torrent is done with comes here: back to the pool, or forgotten
        (with its block views) so it can be freed.

        Up to 32 MiB of spare buffers: enough for the pieces waiting on the hash thread at full
        speed, so steady state allocates nothing. A stopped torrent keeps none.
        """
        if (
            self.state is not TorrentState.STOPPED
            and len(buffer) == self.info.piece_length
            and len(self._buffer_pool) * len(buffer) < POOL_BYTES
        ):
            self._buffer_pool.append(buffer)
        else:
            self._buffer_views.pop(id(buffer), None)

    def _throttle_download(self, conn: PeerConnection, size: int) -> None:
        self._download.charge(size)
        delay = self._download.delay()
        if delay > 0 and not conn.read_paused:
            conn.pause_reading()
            asyncio.get_running_loop().call_later(delay, conn.resume_reading)

    def _piece_stored(self, index: int, buffer: bytearray, stored: asyncio.Future[bool]) -> None:
        """The worker hashed a whole piece (and wrote it when it matched).

        A done-callback, not a task per piece: a verified piece settles here at once (the
        picker, ``have`` to the peers, the buffer back to the pool); a failed hash, a piece
        that failed before (smart-ban evidence to compare) and completion go on in a task.
        """
        if self.state is TorrentState.STOPPED or stored.cancelled():
            self._recycle(buffer)
            return
        picker = self.picker
        assert picker is not None
        try:
            error = stored.exception()
            if error is not None:
                if not isinstance(error, StorageError):
                    log.error("%s: verifying piece %d failed", self.info.name, index, exc_info=error)
                    error = StorageError(f"internal error: {error}")
                self._recycle(buffer)
                self._storage_failed(index, error)  # type: ignore[arg-type]
                return
            ok = stored.result()
            if ok and index not in self._failed_pieces:
                picker.piece_verified(index)
                self._mark_resume_dirty()
                self._recycle(buffer)
                self._announce_have(index)
                if picker.complete:
                    self._spawn(self._on_complete())
                return
            self._spawn(self._settle_and_recycle(index, buffer, ok))
        except Exception:  # a bug here must not leave the piece unsettled without a trace
            log.exception("%s: settling piece %d failed", self.info.name, index)
            self._set_error(f"internal error settling piece {index}")

    def _storage_failed(self, index: int, exc: StorageError) -> None:
        """Disk full or unwritable: stop this torrent's downloading, keep everything else."""
        assert self.picker is not None
        self.picker.piece_failed(index)
        if self.state is not TorrentState.ERROR:
            self._set_error(f"cannot write piece {index}: {exc}", disk_full=exc.disk_full)
            self._stop_requesting()

    async def _settle_and_recycle(self, index: int, buffer: bytearray, ok: bool) -> None:
        try:
            await self._settle(index, buffer, ok)
        finally:
            self._recycle(buffer)

    async def _settle(self, index: int, buffer: bytearray, ok: bool) -> None:
        picker = self.picker
        assert picker is not None
        if ok:
            picker.piece_verified(index)
            self._mark_resume_dirty()
            if index in self._failed_pieces:
                self._failed_pieces.discard(index)
                digests = await asyncio.get_running_loop().run_in_executor(None, _block_digests, bytes(buffer))
                culprits = self._smartban.piece_verified(index, digests)
                for ip in self._strikes.culprits(c for c in culprits if isinstance(c, str)):
                    self._ban(ip, f"sent corrupt data for piece {index}")  # type: ignore[arg-type]
            self._announce_have(index)
            if picker.complete:
                await self._on_complete()
        else:
            self.hash_failures += 1
            self._failed_pieces.add(index)
            digests = _block_digests(bytes(buffer))
            sources = picker.senders(index)  # offset -> sender: the smart-ban evidence, by address
            self._smartban.record_failed(index, {begin: (_trust_key(peer), digests[begin]) for begin, peer in sources.items()})
            contributors = picker.piece_failed(index)
            log.warning("%s: piece %d failed its hash check (%d peers contributed)", self.info.name, index, len(contributors))
            by_ip: dict[str, int] = {}
            for peer, blocks in contributors.items():
                key = _trust_key(peer)
                if isinstance(key, str):
                    by_ip[key] = by_ip.get(key, 0) + blocks
            for ip in self._strikes.piece_failed(by_ip):
                self._ban(ip, f"{self._strikes.strikes(ip)} pieces it sent failed their hash check")  # type: ignore[arg-type]
            self._refill_all()

    def _ban(self, ip: str, reason: str) -> None:
        """``ip`` is banned now (in ``_strikes``): end its connections and forget its addresses."""
        log.warning("%s: banned peer address %s: %s", self.info.name, ip, reason)
        for address in [a for a in self._candidates if a[0] == ip]:
            del self._candidates[address]
        for conn in list(self.peers):
            if conn.address is not None and conn.address[0] == ip:
                conn.close(f"banned: {reason}")

    def _announce_have(self, index: int) -> None:
        for conn in list(self.peers):
            if conn.closed or conn.wire.phase is Phase.AWAIT_HANDSHAKE or not conn.wire.handshake_sent:
                continue
            if conn.have is None or not conn.have[index]:
                conn.write(conn.wire.send(m.Have(index)))
            if conn.wire.am_interested:
                self._update_interest(conn)

    async def _finish_storage(self) -> None:
        try:
            await self.storage.finish()
            await self.storage.save_resume()
        except StorageError as exc:
            self._set_error(f"cannot finish: {exc}", disk_full=exc.disk_full)

    async def _on_complete(self) -> None:
        if self.state is not TorrentState.DOWNLOADING:
            return
        await self._finish_storage()
        if self.state is TorrentState.ERROR:
            return
        self.state = TorrentState.SEEDING
        log.info("%s: download complete", self.info.name)
        for conn in list(self.peers):
            if conn.is_seed:
                conn.close("both are seeds")
            elif conn.wire.am_interested:
                conn.write(conn.wire.send(m.NotInterested()))
        self.completed.set()
        self._emit("completed")

    # -- uploading -------------------------------------------------------------------------

    def _on_request(self, conn: PeerConnection, event: object) -> None:
        """A request event from a codec that does not batch (the engine's own do)."""
        self.on_requests(conn, [(event.index, event.begin, event.length)])  # type: ignore[attr-defined]

    def on_requests(self, conn: PeerConnection, run: list[tuple[int, int, int]]) -> None:
        """Requests from a peer, as the codec's run of (index, begin, length) keys.

        While we choke the peer, or for a piece we do not have, each request is refused (a
        ``reject`` under the fast extension, silence otherwise); the rest join the peer's
        upload queue in order.
        """
        wire = conn.wire
        if not wire.am_choking:
            picker = self.picker
            queue = conn.upload_queue
            if len(queue) > 2 * wire.limits.max_incoming_requests:
                _compact_queue(queue, wire.requests_in)
            if picker is not None and picker.complete:
                queue.extend(run)  # a seed has every piece: no check per block
                run = []
            else:
                have = self.have
                refused = []
                for key in run:
                    if have[key[0]]:
                        conn.upload_queue.append(key)
                    else:
                        refused.append(key)
                run = refused
        if run and wire.fast:
            conn.writelines([wire.send(m.Reject(*key)) for key in run if key in wire.requests_in])
        elif run:
            for key in run:
                wire.forget_request(key)  # BEP 3 has no reject: the peer times the request out
        if conn.upload_queue and not conn.uploading:
            conn.uploading = True
            self._spawn(self._serve(conn))

    async def _serve(self, conn: PeerConnection) -> None:
        """Send requested blocks to one peer, in order, with flow control.

        Blocks whose piece is in memory go out in batches of up to ``UPLOAD_BATCH`` per socket
        write (a loopback write costs about as much as the copy it makes), sliced from the
        piece without a copy; a piece that needs a disk read ends the batch and is awaited,
        which brings the whole piece into the cache for the requests that follow.
        """
        wire = conn.wire
        storage = self.storage
        throttle = self._upload
        queue = conn.upload_queue
        requests_in = wire.requests_in
        try:
            while queue and not conn.closed:
                keys: list[tuple[int, int, int]] = []
                blocks: list[bytes | memoryview] = []
                current, piece = -1, None
                while queue and len(keys) < UPLOAD_BATCH:
                    key = queue.popleft()
                    if key not in requests_in or key in keys:
                        continue  # cancelled, dropped by a choke, or asked twice
                    index, begin, length = key
                    if index != current:
                        current, piece = index, storage.cached_piece(index)
                    if piece is not None:
                        blocks.append(piece[begin : begin + length])
                        keys.append(key)
                        continue
                    if keys:
                        queue.appendleft(key)
                        break
                    data = await storage.read_block(index, begin, length)
                    current = -1  # the piece is cached now: look it up again for the next key
                    if conn.closed or key not in requests_in:
                        continue
                    blocks.append(data)
                    keys.append(key)
                if not keys or conn.closed:
                    continue
                sent = sum(len(block) for block in blocks)
                if throttle.limited:
                    throttle.charge(sent)
                    delay = throttle.delay()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        if conn.closed:
                            break
                keys, blocks = _still_requested(requests_in, keys, blocks)
                conn.writelines(wire.frame_pieces(keys, blocks))  # type: ignore[arg-type]
                conn.upload_meter.add(sent)  # type: ignore[union-attr]
                self.upload_meter.add(sent)
                await conn.drain()
        except StorageError as exc:
            log.error("%s: cannot read for upload: %s", self.info.name, exc)
            conn.close("local read error")
        finally:
            conn.uploading = False

    # -- periodic work ---------------------------------------------------------------------

    def _mark_resume_dirty(self) -> None:
        self._resume_dirty = True
        self._wake()

    def _wake(self) -> None:
        """Something gave the torrent work (a candidate, a peer, pieces to save): run the tick
        loop and, with peers, the choke loop. Each loop ends when its work does, so an idle
        torrent holds no task and no timer; calling this while they run costs nothing."""
        if self.state not in (TorrentState.DOWNLOADING, TorrentState.SEEDING):
            return
        if not self._ticking:
            self._ticking = True
            self._spawn(self._tick_loop())
            self._emit("awake")
        if self.peers and not self._choking:
            self._choking = True
            self._spawn(self._choke_loop())

    def _idle_for(self) -> float | None:
        """0 while there is something to tick for: a peer, a dial in flight, resume data to
        save, a candidate due. Otherwise the seconds until a download's next candidate is due
        to be dialled again, or None when nothing is (seeds do not dial)."""
        if self.peers or self._connecting or self._resume_dirty:
            return 0.0
        if self._candidates and self.state is TorrentState.DOWNLOADING:
            return max(0.0, min(self._candidates.values()) - time.monotonic())
        return None

    async def _choke_loop(self) -> None:
        try:
            while self.peers:  # nobody to choke or unchoke: the loop ends until a peer comes
                self._choke_round()
                await asyncio.sleep(self.settings.choke_interval)
        finally:
            self._choking = False

    def _choke_round(self) -> None:
        peers = [conn for conn in self.peers if conn.have is not None and not conn.closed]
        stats = [
            PeerStats(
                peer=conn,
                interested=conn.wire.peer_interested,
                choked=conn.wire.am_choking,
                download_rate=conn.download_meter.rate if conn.download_meter else 0.0,  # type: ignore[union-attr]
                upload_rate=conn.upload_meter.rate if conn.upload_meter else 0.0,  # type: ignore[union-attr]
                is_seed=conn.is_seed,
                snubbed=conn.snubbed,
            )
            for conn in peers
        ]
        unchoke, self._choker_state = decide(
            stats,
            seeding=self.picker is not None and self.picker.complete,
            slots=self.settings.upload_slots,
            now=time.monotonic(),
            rng=self.rng,
            state=self._choker_state,
            optimistic_interval=self.settings.optimistic_interval,
        )
        for conn in peers:
            wire = conn.wire
            if conn in unchoke and wire.am_choking:
                conn.write(wire.send(m.Unchoke()))
            elif conn not in unchoke and not wire.am_choking:
                chunks = [wire.send(m.Choke())]
                if wire.fast:
                    chunks += [wire.send(m.Reject(*key)) for key in list(wire.requests_in)]
                conn.upload_queue.clear()
                conn.writelines(chunks)

    async def _tick_loop(self) -> None:
        """Tick every ``tick_interval`` while ``_idle_for`` says there is work; then end, with
        rates read as 0, and a timer for the next candidate due if a download has one."""
        resume_every = 30.0
        try:
            while (idle := self._idle_for()) == 0.0:
                await asyncio.sleep(self.settings.tick_interval)
                now = time.monotonic()
                self._tick(now)
                if self._resume_dirty and now - self._last_resume >= resume_every:
                    self._resume_dirty = False
                    self._last_resume = now
                    try:
                        await self.storage.save_resume()
                    except StorageError as exc:
                        log.warning("%s: could not save resume data: %s", self.info.name, exc)
        finally:
            self._ticking = False
        self.download_meter.settle()
        self.upload_meter.settle()
        if idle is not None and self.state is TorrentState.DOWNLOADING:
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            self._wake_timer = asyncio.get_running_loop().call_later(idle, self._wake)

    def _tick(self, now: float) -> None:
        self.download_meter.update()
        self.upload_meter.update()
        settings = self.settings
        for conn in list(self.peers):
            if conn.closed:
                continue
            wire = conn.wire
            if wire.phase is Phase.AWAIT_HANDSHAKE:
                if now - conn.connected_at > settings.handshake_timeout:
                    conn.close("handshake timeout")
                continue
            if now - conn.last_received > settings.inactivity_timeout:
                conn.close("peer silent for too long")
                continue
            if conn.address is not None and self._strikes.is_banned(conn.address[0]):
                conn.close("banned address")  # by another torrent of the session
                continue
            if now - conn.last_sent > settings.keepalive_interval:
                conn.write(wire.send(m.KeepAlive()))
            rate = conn.download_meter.update() if conn.download_meter else 0.0  # type: ignore[union-attr]
            if conn.upload_meter:
                conn.upload_meter.update()  # type: ignore[union-attr]
            if now - conn.connected_at >= 3 * settings.tick_interval:
                wanted = int(rate * settings.request_queue_seconds / BLOCK_SIZE) + settings.min_request_queue
                self._retarget(conn, max(settings.min_request_queue, min(conn.queue_target, 2 * wanted)))
            if wire.requests_out and now - conn.last_block > settings.request_timeout and not conn.snubbed:
                self._snub(conn)
        self._connect_more()

    def _snub(self, conn: PeerConnection) -> None:
        """A peer that sends nothing for our requests: give its blocks to others."""
        assert self.picker is not None
        conn.snubbed = True
        self._retarget(conn, self.settings.min_request_queue)
        conn.writelines(self._withdraw_requests(conn, cancel=True))
        log.info("%s: peer %s snubbed us", self.info.name, conn.describe())
        self._refill_all(exclude=conn)

    # -- reporting -------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return {
            "name": self.info.name,
            "info_hash": self.meta.info_hash_hex,
            "state": self.state.value,
            "error": self.error,
            "progress": round(self.progress, 4),
            "size": self.info.total_length,
            "left": self.left,
            "peers": len(self.peers),
            "download_rate": round(self.download_meter.rate),
            "upload_rate": round(self.upload_meter.rate),
            "downloaded": self.download_meter.total,
            "uploaded": self.upload_meter.total,
            "from_peers": self.bytes_from_peers,
            "from_webseed": self.bytes_from_webseed,
            "wasted": self.bytes_wasted,
            "hash_failures": self.hash_failures,
        }


def _claim_live(index: int, conn: PeerConnection, until: float, now: float) -> bool:
    """A web-seed claim still stands: its peer is connected, has not got the piece, in time."""
    return not conn.closed and now <= until and not (conn.have is not None and conn.have[index])


def _trust_key(source: object) -> object:
    """Who a block came from, for evidence and strikes: a peer's IP address (so a reconnect
    changes nothing), any other source (the web seed) as itself."""
    if isinstance(source, PeerConnection) and source.address is not None:
        return source.address[0]
    return source


def _count_ips(addresses: Iterable[Address]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for host, _ in addresses:
        counts[host] = counts.get(host, 0) + 1
    return counts


def _compact_queue(queue: deque[tuple[int, int, int]], requests_in: dict[tuple[int, int, int], None]) -> None:
    """Keep in a peer's upload queue only the requests still owed, once each, in order.

    Entries go stale when a request is cancelled or repeated; the upload loop skips them, but a
    peer that repeats or cancels while not reading could pile them up without end. Compacting
    when the queue passes twice the request cap keeps it within that, at O(1) a request.
    """
    kept = [key for key in dict.fromkeys(queue) if key in requests_in]
    queue.clear()
    queue.extend(kept)


def _block_digests(data: bytes) -> dict[int, bytes]:
    """SHA-1 of each 16 KiB block, keyed by offset (smart-ban evidence; only for failed pieces)."""
    return {begin: hashlib.sha1(data[begin : begin + BLOCK_SIZE]).digest() for begin in range(0, len(data), BLOCK_SIZE)}


def _still_requested(requests_in: dict, keys: list, blocks: list) -> tuple[list, list]:
    """Drop blocks cancelled while the batch waited (a disk read, the rate limit)."""
    if all(key in requests_in for key in keys):
        return keys, blocks
    kept = [(key, block) for key, block in zip(keys, blocks) if key in requests_in]
    return [key for key, _ in kept], [block for _, block in kept]
