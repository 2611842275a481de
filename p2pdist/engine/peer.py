"""The asyncio driver around one ``PeerWire``: bytes from the socket in, events to an owner out.

It is deliberately thin. Received bytes land directly in the codec's buffer (BufferedProtocol:
no copy, no await per block), every complete message goes to the owner's ``on_event``, and the
owner writes through ``write``. Once a peer sends blocks fast, ``engine.direct`` takes over the
reading (POSIX) and puts its blocks straight into their piece buffers. The owner is the session
until the handshake names a torrent, then that torrent. Protocol errors close this connection
only and are reported with a reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from p2pdist.bitfield import Bitfield
from p2pdist.engine import direct
from p2pdist.engine.ratelimit import RateMeter
from p2pdist.errors import LocalError, RemoteError
from p2pdist.wire.codec import NEED_DATA, PeerWire, PieceRun, RequestRun

# Wait for a block's worth of bytes before waking up, when that is what the codec waits for:
# on a LAN a 16 KiB block arrives in a dozen small reads, each a callback into Python. Linux
# honours SO_RCVLOWAT in epoll (and still wakes on EOF or errors); elsewhere it is left alone.
_LOWAT = getattr(socket, "SO_RCVLOWAT", None) if sys.platform.startswith("linux") else None
_LOWAT_FROM = 4096  # below this, waiting saves little
_LOWAT_MAX = 64 * 1024  # within any receive buffer the kernel will use
_LOWAT_READS_BELOW = 16 * 1024

log = logging.getLogger("p2pdist.peer")


class PeerOwner(Protocol):
    """What the driver calls: the session until the handshake names a torrent, then that torrent."""

    def on_event(self, conn: PeerConnection, event: object) -> None: ...

    def on_blocks(self, conn: PeerConnection, run: PieceRun) -> None:
        """Piece messages as the codec's borrowed run of ``(index, begin, data)`` tuples."""

    def on_requests(self, conn: PeerConnection, run: RequestRun) -> None:
        """Request messages as the codec's run of ``(index, begin, length)`` keys."""

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None: ...

    # The scatter-read fast path (engine/direct.py).
    @property
    def direct_receive(self) -> bool:
        """Whether this owner's peers may be read with scatter reads at all."""

    def receive_slots(self, conn: PeerConnection, limit: int) -> tuple[list[tuple[int, int, int]], list[memoryview]]:
        """Keys and slots of the next blocks ``conn`` should send, in request order."""

    def on_placed(self, conn: PeerConnection, keys: list[tuple[int, int, int]]) -> None:
        """Blocks the driver read straight into the slots ``receive_slots`` gave it."""


class InboundGate(Protocol):
    def admit(self, conn: PeerConnection) -> str | None:
        """Why an accepted connection may not stay (its address is known now), or None."""


class PeerConnection(asyncio.BufferedProtocol):
    """One TCP connection to a peer; state the torrent keeps per peer lives here too."""

    def __init__(
        self,
        wire: PeerWire,
        owner: PeerOwner,
        *,
        outbound: bool,
        address: tuple[str, int] | None = None,
        max_send_buffer: int = 1 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wire = wire
        self.clock = clock
        self.owner = owner
        self.outbound = outbound
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._finished = False
        self.close_reason = ""
        now = clock()
        self.connected_at = now
        self.last_received = now
        self.last_sent = now
        self.last_block = now  # last piece data received (snub detection)
        self._writable = asyncio.Event()
        self._writable.set()
        # Past the transport's high-water mark, every write checks the send buffer against
        # this: a peer that makes us write without reading is closed, not buffered for.
        self.max_send_buffer = max_send_buffer
        self._write_paused = False
        # Torrent-side per-peer state.
        self.have: Bitfield | None = None
        self.is_seed = False
        self.upload_queue: deque[tuple[int, int, int]] = deque()
        self.uploading = False
        self.snubbed = False
        self.queue_target = 0  # requests to keep in flight
        self.refill_at = 0  # top the pipeline up when in-flight requests fall to this
        self.blocks_since_growth = 0
        self.download_meter = RateMeter(clock)  # the torrent starts fresh ones at the handshake
        self.upload_meter = RateMeter(clock)
        self.read_paused = False
        self._socket: socket.socket | None = None
        self._lowat = 1
        self._direct: direct.DirectReader | None = None

    # -- asyncio.BufferedProtocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport has a Transport's methods; uvloop's does not subclass it.
        self.transport = stream = cast(asyncio.Transport, transport)
        if _LOWAT is not None:
            self._socket = transport.get_extra_info("socket")
        if self.address is None:
            peer = transport.get_extra_info("peername")
            self.address = (peer[0], peer[1]) if peer else ("?", 0)
        if self.outbound:
            self.write(self.wire.handshake())
        elif self.closed:
            stream.abort()  # closed before the transport existed: nothing else would end it
        else:
            admit = getattr(self.owner, "admit", None)  # an InboundGate (the session)
            refusal = admit(self) if admit is not None else None
            if refusal:
                self.close(refusal)

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return self.wire.get_buffer(sizehint)
        except RemoteError as exc:
            self.close(str(exc))
            return memoryview(bytearray(4096))  # discarded: the transport is closing

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        self.wire.buffer_updated(nbytes)
        self.process_events(nbytes)

    def process_events(self, nbytes: int) -> None:
        """Hand every complete message in the codec to the owner (``nbytes`` were just read)."""
        if self.closed:
            return
        self.last_received = self.clock()
        next_event = self.wire.next_event
        downloading = False
        try:
            while not self.closed:
                event = next_event()
                if type(event) is PieceRun:  # the hot paths: a socket read's worth of blocks
                    downloading = True
                    self.owner.on_blocks(self, event)
                elif type(event) is RequestRun:
                    self.owner.on_requests(self, event)
                elif event is NEED_DATA:
                    break
                else:
                    self.owner.on_event(self, event)
        except (RemoteError, LocalError) as exc:
            self.fail(exc)
        if self.closed:
            return
        if downloading and self._direct is None and nbytes >= direct.FAST_READ:
            self._read_directly()
        if self._socket is not None and self._direct is None:
            # Only when reads come in small pieces (a slow link): fast links read whole blocks.
            self._set_lowat(self.wire.bytes_missing if nbytes < _LOWAT_READS_BELOW else 0)

    def placed(self, keys: list[tuple[int, int, int]]) -> None:
        """Blocks the direct reader put straight into their slots (see ``engine.direct``)."""
        self.last_received = self.clock()
        try:
            self.owner.on_placed(self, keys)
        except (RemoteError, LocalError) as exc:
            self.fail(exc)

    def fail(self, exc: RemoteError | LocalError) -> None:
        """Close for an error met while reading: the peer's (a protocol error) or ours (logged)."""
        if isinstance(exc, RemoteError):
            self.close(f"protocol error: {exc}")
        else:
            log.error("peer %s: internal error: %s", self.describe(), exc)
            self.close(f"internal error: {exc}")

    def _read_directly(self) -> None:
        """From now on read this fast peer with scatter reads, when the platform and owner can."""
        if not direct.SUPPORTED or not self.owner.direct_receive or self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            reader = direct.DirectReader(self, sock, self.owner)
        except OSError as exc:
            log.debug("peer %s: no direct reads: %s", self.describe(), exc)
            return
        self._direct = reader
        if self._socket is not None and self._lowat != 1:
            self._set_lowat(0)  # the reader plans only on fast links, where reads are large
        self.transport.pause_reading()
        if not self.read_paused:
            reader.start()

    def _set_lowat(self, missing: int) -> None:
        """Be woken once the message being received is complete, not for every packet of it."""
        want = min(missing, _LOWAT_MAX) if missing >= _LOWAT_FROM else 1
        if want != self._lowat:
            try:
                self._socket.setsockopt(socket.SOL_SOCKET, _LOWAT, want)  # type: ignore[union-attr, arg-type]  # called only where _LOWAT and the socket exist
            except OSError:
                self._socket = None  # not supported here: read as data comes
                return
            self._lowat = want

    def eof_received(self) -> bool:
        self.close("peer closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = f"connection lost: {exc}" if exc else "connection closed"
        self._finish()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._writable.clear()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._writable.set()

    def _check_send_buffer(self) -> None:
        if self.transport.get_write_buffer_size() > self.max_send_buffer:  # type: ignore[union-attr]  # called only while connected
            self.close(f"peer does not read: more than {self.max_send_buffer} bytes waiting to be sent")

    # -- used by the owner ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        # A transport that failed a send is closing before our connection_lost runs; writes in
        # between would only be counted and logged by asyncio ("socket.send() raised exception").
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        self.last_sent = self.clock()
        if self._write_paused:
            self._check_send_buffer()

    def writelines(self, chunks: Sequence[bytes | memoryview]) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        self.transport.writelines(chunks)
        self.last_sent = self.clock()
        if self._write_paused:
            self._check_send_buffer()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        if not self._writable.is_set():
            await self._writable.wait()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.read_paused and not self.closed:
            self.read_paused = True
            if self._direct is not None:
                self._direct.stop()
            else:
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.read_paused and not self.closed:
            self.read_paused = False
            if self._direct is not None:
                self._direct.start()
            else:
                self.transport.resume_reading()

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        """Tell the owner once, whichever of close() and connection_lost() comes first."""
        if self._finished:
            return
        self._finished = True
        if self._direct is not None:
            self._direct.close()
        self._writable.set()
        log.debug("peer %s closed: %s", self.describe(), self.close_reason)
        self.owner.on_disconnect(self, self.close_reason)

    def describe(self) -> str:
        host, port = self.address or ("?", 0)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def __repr__(self) -> str:
        return f"<PeerConnection {self.describe()}>"
