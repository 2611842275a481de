"""One torrent's swarm: the coordinator of its peers, requests, pieces and uploads.

Theory of operation
-------------------
Decisions are made by pure parts and applied by the engine. The piece picker says which blocks
to request from whom, the choker says whom to upload to, storage says whether a piece
verified. ``Torrent`` owns one of each job's parts and turns wire events into calls on them:

- ``Dialler`` (dialling.py): candidates, dials and their back-off;
- ``Requests`` (requests.py): what is in flight from each peer, the one owner of the pipeline;
- ``Receiver`` (receive.py): the receive hot path, buffer pool and scatter-read slots;
- ``Settlement`` (settlement.py): verified and failed pieces, smart ban;
- ``Uploads`` (uploads.py): request serving and the upload limit;
- ``Choking`` (choking.py): the choke round;
- ``WebClaims`` (claims.py): the web-seed claim protocol beside webseed.py.

Here stay the lifecycle, the message dispatch, the tick and the public surface the daemon and
the tools use. What one peer can make us hold is bounded: its requests (the codec's caps), its
upload queue (uploads.py), what waits in its send buffer (``PeerConnection.max_send_buffer``),
its receive buffer (the codec's, fixed) and its share of the slots
(``max_connections_per_address``).

Periodic work runs in one tick per second (rates, timeouts, snubbing, keep-alives, new
connections) and one choke round every ``choke_interval``, rather than a timer per peer; both
loops run only while there is work for them (``wake``), so an idle seed costs nothing. Time is
read from ``clock`` and connections are made by ``connect`` (seams for tests; by default
``time.monotonic`` and the loop's ``create_connection``).
Left out on purpose: PEX, DHT and metadata exchange (private torrents, BEP 27), uTP, encryption.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from p2pdist.aio import Flag, stop_tasks
from p2pdist.bitfield import Bitfield
from p2pdist.engine.choking import Choking
from p2pdist.engine.claims import WebClaims
from p2pdist.engine.dialling import Address, Connect, Dialler, tcp_connect
from p2pdist.engine.events import Events
from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.ratelimit import RateMeter, Throttle, TokenBucket
from p2pdist.engine.receive import Receiver
from p2pdist.engine.requests import Requests
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.settlement import Settlement
from p2pdist.engine.targets import DialPolicy
from p2pdist.engine.uploads import Uploads
from p2pdist.metainfo import Layout, Metainfo
from p2pdist.piece_picker.picker import PiecePicker
from p2pdist.piece_picker.smartban import Strikes
from p2pdist.storage.base import Storage, StorageError
from p2pdist.wire import messages as m
from p2pdist.wire.state import Phase

__all__ = ["Address", "Torrent", "TorrentState"]

log = logging.getLogger("p2pdist.torrent")

RESUME_EVERY = 30.0  # seconds between resume saves while pieces keep coming


class TorrentState(enum.Enum):
    CHECKING = "checking"
    DOWNLOADING = "downloading"
    SEEDING = "seeding"
    STOPPED = "stopped"
    ERROR = "error"


# The parts of a torrent that only a swarm uses: made together on first use (``Torrent._swarm``).
_PARTS = ("dialler", "requests", "receiver", "uploads", "settlement", "choking", "claims", "events")


class Torrent:
    """A torrent being downloaded or seeded by this process."""

    # A thousand held packages are a thousand of these: no per-instance dict, and the swarm's
    # parts (``_PARTS``) only once a peer, a candidate or a web seed needs them (``__getattr__``).
    __slots__ = (
        "meta", "info", "info_hash", "layout", "storage", "peer_id", "settings", "listen_port", "rng", "clock",
        "state", "error", "disk_full", "picker", "peers", "strikes", "dial_refusal", "can_connect",
        "tracker_answered", "download_meter", "upload_meter", "bytes_from_peers", "bytes_from_webseed",
        "bytes_wasted", "first_block_at", "hash_failures", "completed", "stopped", "_tasks", "_resume_dirty",
        "_last_resume", "_ticking", "ticks", "_wake_timer", "_listeners", "_connect", "_upload_bucket",
        "_download_bucket", "_swarming", *_PARTS,
    )
    dialler: Dialler
    requests: Requests
    receiver: Receiver
    uploads: Uploads
    settlement: Settlement
    choking: Choking
    claims: WebClaims
    events: Events

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
        clock: Callable[[], float] = time.monotonic,
        connect: Connect = tcp_connect,
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
        self.clock = clock
        self.state = TorrentState.CHECKING
        self.error: str | None = None
        self.disk_full = False  # the error is a full disk (or quota): room coming back fixes it
        self.picker: PiecePicker | None = None
        self.peers: set[PeerConnection] = set()
        self.strikes = strikes or Strikes(failures_to_ban=settings.ban_after_failures)
        self.dial_refusal = dial_refusal or DialPolicy(min_port=settings.min_peer_port, networks=settings.peer_networks).refusal
        self.can_connect = can_connect
        self.tracker_answered = False  # set by the tracker client after its first answer
        self.download_meter = RateMeter(clock)
        self.upload_meter = RateMeter(clock)
        self.bytes_from_peers = 0
        self.bytes_from_webseed = 0
        self.bytes_wasted = 0
        self.first_block_at: float | None = None  # clock time of the first payload byte
        self.hash_failures = 0
        self.completed = Flag()
        self.stopped = Flag()
        self._tasks: set[asyncio.Task[Any]] | None = None  # made by the first spawn, dropped when empty
        self._resume_dirty = False
        self._last_resume = clock()
        # The tick and choke loops run only while there is work (see ``wake``): an idle torrent
        # has no task and no timer, so an agent seeding a thousand packages to nobody sleeps.
        self._ticking = False
        self.ticks = 0  # for tests and diagnostics
        self._wake_timer: asyncio.TimerHandle | None = None  # a download's next candidate due
        self._listeners: list[Callable[[str], None]] = []
        self._connect = connect
        self._upload_bucket = upload_bucket or TokenBucket(settings.upload_rate_limit, clock=clock)
        self._download_bucket = download_bucket or TokenBucket(settings.download_rate_limit, clock=clock)
        self._swarming = False  # the parts exist (``_swarm``)

    if not TYPE_CHECKING:  # checkers see the parts as the plain attributes they become

        def __getattr__(self, name: str) -> Any:
            """Only for a part not made yet (a slot never set): make the parts, then read it."""
            if name not in _PARTS or self._swarming:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            self._swarm()
            return getattr(self, name)

    def _swarm(self) -> None:
        """Make the parts, one per job (module docstring). A seed nobody visits never needs
        them; once made they are plain slots, so the hot paths pay nothing for the wait."""
        clock = self.clock
        settings = self.settings
        own = functools.partial(TokenBucket.of, clock=clock)
        self._swarming = True
        self.dialler = Dialler(self, self._connect)
        self.requests = Requests(self)
        if self.picker is not None:
            self.requests.bind(self.picker)
        self.receiver = Receiver(self, Throttle(self._download_bucket, own(settings.torrent_download_rate_limit)))
        self.uploads = Uploads(self, Throttle(self._upload_bucket, own(settings.torrent_upload_rate_limit)))
        self.settlement = Settlement(self)
        self.choking = Choking(self)
        self.claims = WebClaims(self.info.num_pieces, clock)
        self.events = Events(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Check existing data, then begin swarming."""
        try:
            have = await self.storage.start(progress)
        except StorageError as exc:
            self.set_error(str(exc), disk_full=exc.disk_full)
            raise
        self.picker = PiecePicker(self.layout, rng=self.rng, have=have)
        if self._swarming:
            self.requests.bind(self.picker)
        if self.picker.complete:
            await self._finish_storage()
            self.state = TorrentState.SEEDING
            self.completed.set()
        else:
            self.state = TorrentState.DOWNLOADING
        self.wake()
        self._emit("started")

    async def stop(self) -> None:
        if self.state is TorrentState.STOPPED:
            return
        self.state = TorrentState.STOPPED
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        for conn in list(self.peers):
            conn.close("torrent stopped")
        if self._swarming:
            self.receiver.clear()
        if self._tasks:
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

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as one of the torrent's tasks (stopped with it; failures logged)."""
        task = asyncio.ensure_future(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: background task failed", self.info.name, exc_info=task.exception())

    def set_error(self, message: str, *, disk_full: bool = False) -> None:
        self.state = TorrentState.ERROR
        self.error = message
        self.disk_full = disk_full
        log.error("%s: %s", self.info.name, message)
        self._emit("error")

    async def on_complete(self) -> None:
        if self.state is not TorrentState.DOWNLOADING:
            return
        await self._finish_storage()
        if self.state is TorrentState.ERROR:  # type: ignore[comparison-overlap]  # set during the await; mypy keeps the narrowing
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

    async def _finish_storage(self) -> None:
        try:
            await self.storage.finish()
            await self.storage.save_resume()
        except StorageError as exc:
            self.set_error(f"cannot finish: {exc}", disk_full=exc.disk_full)

    # -- state -----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Downloading or seeding: it takes peers."""
        return self.state is TorrentState.DOWNLOADING or self.state is TorrentState.SEEDING

    @property
    def downloading(self) -> bool:
        return self.state is TorrentState.DOWNLOADING

    @property
    def seeding(self) -> bool:
        return self.state is TorrentState.SEEDING

    @property
    def stopping(self) -> bool:
        return self.state is TorrentState.STOPPED

    @property
    def errored(self) -> bool:
        return self.state is TorrentState.ERROR

    @property
    def banned(self) -> frozenset[str]:
        """Addresses banned for bad data (by any torrent sharing our ``Strikes``)."""
        return frozenset(str(ip) for ip in self.strikes.banned)

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
        addresses = list(addresses)
        if addresses or self._swarming:  # a tracker's empty answer gives no part work
            self.dialler.add(addresses)

    def attach_inbound(self, conn: PeerConnection, handshake: m.Handshake) -> bool:
        """Take over an inbound connection whose handshake named this torrent."""
        if not self.active:
            return False
        if conn.address and self.strikes.is_banned(conn.address[0]):
            return False
        if len(self.peers) >= self.settings.max_peers_per_torrent:
            return False
        if conn.address and self.dialler.per_address_full(conn.address[0]):
            return False
        conn.wire.bind(self.layout, self.info_hash)
        conn.owner = self
        conn.write(conn.wire.handshake())
        self.peers.add(conn)
        self.wake()
        self.events.on_handshake(conn, handshake)
        return not conn.closed

    def peers_settled(self) -> bool:
        """The tracker answered, every peer it named was dialled, and every connected peer has
        said what it has: from here on, what no peer has must come from elsewhere."""
        if not self.tracker_answered or self.dialler.connecting:
            return False
        return all(conn.have is not None or conn.closed for conn in self.peers)

    # -- the web seed's side ---------------------------------------------------------------

    def claim_web_piece(self, index: int) -> None:
        """Tell the peers that we fetch ``index`` from the web seed now (claims.py)."""
        self.claims.claim(index, self.peers)

    def web_fetchers(self) -> set[bytes]:
        """Peer ids of the connected peers with a live web-seed claim (fetching right now)."""
        return self.claims.fetchers()

    def claimed_elsewhere(self, index: int) -> bool:
        """A connected peer said it fetches ``index`` from the web seed, and has not finished."""
        return self.claims.claimed_elsewhere(index)

    def deliver_webseed_block(self, source: Hashable, index: int, begin: int, data: bytes | memoryview) -> bool:
        """A block fetched over HTTP (BEP 19); counted apart from peer bytes (the WAN savings)."""
        self.download_meter.add(len(data))
        if self.receiver.take_run(source, [(index, begin, data)])[0]:
            self.bytes_from_webseed += len(data)
            return True
        self.bytes_wasted += len(data)
        return False

    # -- PeerOwner: what the peer driver calls ---------------------------------------------

    def on_blocks(self, conn: PeerConnection, run: Sequence[tuple[int, int, memoryview]]) -> None:
        """Piece messages from a peer, one socket read's run (receive.py)."""
        self.receiver.on_blocks(conn, run)

    def on_placed(self, conn: PeerConnection, keys: list[tuple[int, int, int]]) -> None:
        """Blocks the driver read straight into ``receive_slots`` (receive.py)."""
        self.receiver.on_placed(conn, keys)

    def receive_slots(self, conn: PeerConnection, limit: int) -> tuple[list[tuple[int, int, int]], list[memoryview]]:
        """Where ``conn``'s next blocks belong, for its scatter reads (receive.py)."""
        return self.receiver.receive_slots(conn, limit)

    @property
    def direct_receive(self) -> bool:
        """Whether peer drivers may read blocks straight into ``receive_slots``."""
        return self.settings.direct_receive

    def on_requests(self, conn: PeerConnection, run: Sequence[tuple[int, int, int]]) -> None:
        """Request messages from a peer, one socket read's run (uploads.py)."""
        self.uploads.on_requests(conn, run)

    def on_event(self, conn: PeerConnection, event: object) -> None:
        """Any other wire event (events.py)."""
        self.events.on_event(conn, event)

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None:
        self.peers.discard(conn)
        self.events.forget(conn)
        self.requests.peer_gone(conn)
        self.dialler.disconnected(conn)
        if self.downloading:
            self.requests.refill_all()

    # -- periodic work ---------------------------------------------------------------------

    def mark_resume_dirty(self) -> None:
        self._resume_dirty = True
        self.wake()

    def wake(self) -> None:
        """Something gave the torrent work (a candidate, a peer, pieces to save): run the tick
        loop and, with peers, the choke loop. Each loop ends when its work does, so an idle
        torrent holds no task and no timer; calling this while they run costs nothing."""
        if not self.active:
            return
        if not self._ticking:
            self._ticking = True
            self.spawn(self._tick_loop())
            self._emit("awake")
        if self.peers:
            self.choking.start()

    def _idle_for(self) -> float | None:
        """0 while there is something to tick for: a peer, a dial in flight, resume data to
        save, a candidate due. Otherwise the seconds until a download's next candidate is due
        to be dialled again, or None when nothing is (seeds do not dial)."""
        if self.peers or self._resume_dirty or (self._swarming and self.dialler.connecting):
            return 0.0
        due = self.dialler.next_due() if self._swarming else None
        if due is not None and self.downloading:
            return max(0.0, due - self.clock())
        return None

    async def _tick_loop(self) -> None:
        """Tick every ``tick_interval`` while ``_idle_for`` says there is work; then end, with
        rates read as 0, and a timer for the next candidate due if a download has one."""
        try:
            while (idle := self._idle_for()) == 0.0:
                await asyncio.sleep(self.settings.tick_interval)
                now = self.clock()
                self.tick(now)
                if self._resume_dirty and now - self._last_resume >= RESUME_EVERY:
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
        if idle is not None and self.downloading:
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            self._wake_timer = asyncio.get_running_loop().call_later(idle, self.wake)

    def tick(self, now: float) -> None:
        """Rates, timeouts, snubbing, keep-alives and the pipeline's depth; then new dials."""
        self.ticks += 1
        self.download_meter.update()
        self.upload_meter.update()
        if not self._swarming:
            return  # no part made: no peer to look after, no candidate to dial
        settings = self.settings
        requests = self.requests
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
            if conn.address is not None and self.strikes.is_banned(conn.address[0]):
                conn.close("banned address")  # by another torrent of the session
                continue
            if now - conn.last_sent > settings.keepalive_interval:
                conn.write(wire.send(m.KeepAlive()))
            rate = conn.download_meter.update()
            conn.upload_meter.update()
            if now - conn.connected_at >= 3 * settings.tick_interval:
                requests.retune(conn, rate)
            if requests.stalled(conn, now):
                requests.snub(conn)
        self.dialler.connect_more()

