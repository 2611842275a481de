"""Engine tests without wall-clock waits: a virtual-time event loop and in-memory streams.

``VirtualLoop`` is a real asyncio loop whose clock only moves when nothing is ready: a wait for
a timer jumps straight to it, so an hour of back-off runs in milliseconds, and the times the
engine sees are exact. Give the engine ``loop.time`` as its clock. Nothing may run in threads
behind the loop's back (time would jump while a thread works): ``inline_storage`` builds
storage whose hashing and executor jobs run on the loop's thread.

``MemoryNet`` is the connection factory: ``listen`` an address with a protocol factory (a
``Session.inbound``), and ``connect`` pairs two in-memory transports, delivering written bytes
on the next loop iteration; dialling an address nobody listens on is refused.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from p2pdist.metainfo import Info
from p2pdist.storage.memory import MemoryStorage
from p2pdist.storage.workers import Done, PieceWorkers

T = TypeVar("T")
REAL_SECONDS = 60.0  # a virtual test that runs longer than this in real time is hung


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.deadline = time.monotonic() + REAL_SECONDS

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if time.monotonic() > self.deadline:
            raise RuntimeError(f"virtual-time test still running after {REAL_SECONDS} s of real time")
        if timeout is None:
            return super().select(0.01)  # nothing scheduled: only another thread can wake us
        self.now += timeout  # nothing to do until the next timer: go there
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)
        self.set_default_executor(InlineExecutor())

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Callable[[VirtualLoop], Awaitable[T]]) -> T:
    """Run ``main(loop)`` on a fresh ``VirtualLoop`` and close it."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


class InlineExecutor(ThreadPoolExecutor):
    """Runs each job at once, on the caller's thread (it never starts one of its own; a
    ThreadPoolExecutor only because asyncio's default executor must be one)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class InlinePieceWorkers(PieceWorkers):
    """Hashes and stores each piece at once; settles its future on the next loop iteration,
    as the real workers' ``call_soon_threadsafe`` would."""

    def __init__(self) -> None:
        super().__init__(1)

    def submit(
        self, loop: asyncio.AbstractEventLoop, function: Callable[..., Any], *args: Any, on_done: Done | None = None
    ) -> asyncio.Future[Any]:
        future = loop.create_future()
        error: BaseException | None = None
        result: Any = None
        try:
            result = function(*args)
        except Exception as exc:
            error = exc

        def settle() -> None:
            try:
                if on_done is not None:
                    on_done(error, result)
            finally:
                if not future.done():
                    future.set_exception(error) if error is not None else future.set_result(result)

        loop.call_soon(settle)
        return future


def inline_storage(info: Info, data: bytes | None = None) -> MemoryStorage:
    """Memory storage (seeded with ``data``) whose work all happens on the loop's thread."""
    if data is not None:
        return MemoryStorage.from_data(info, data, executor=InlineExecutor())  # a seed: no pieces to hash
    return MemoryStorage(info, executor=InlineExecutor(), piece_workers=InlinePieceWorkers())


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory stream: what it writes arrives at the other end's protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol, peername: tuple[str, int]) -> None:
        super().__init__()
        self.loop = loop
        self.protocol = protocol
        self.peername = peername
        self.other: MemoryTransport | None = None
        self._incoming = bytearray()
        self._scheduled = False
        self._paused = False
        self._closing = False
        self._lost = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peername if name == "peername" else default  # no socket: no scatter reads

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing and self.other is not None:
            self.other._receive(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self._paused = True

    def resume_reading(self) -> None:
        self._paused = False
        self._schedule()

    def is_reading(self) -> bool:
        return not self._paused

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.loop.call_soon(self._connection_lost)
        if self.other is not None:
            self.other._peer_gone()

    def _peer_gone(self) -> None:
        if not self._closing:
            self._closing = True
            self.loop.call_soon(self._connection_lost)

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self.protocol.connection_lost(None)

    def _receive(self, data: bytes) -> None:
        if self._closing:
            return
        self._incoming += data
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._incoming and not self._paused:
            self._scheduled = True
            self.loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        protocol = self.protocol
        assert isinstance(protocol, asyncio.BufferedProtocol)
        for _ in range(10_000):  # bounded: a buffer of at least one byte drains it long before
            if not self._incoming or self._paused or self._closing:
                return
            buffer = protocol.get_buffer(len(self._incoming))
            count = min(len(buffer), len(self._incoming))
            buffer[:count] = self._incoming[:count]
            del self._incoming[:count]
            protocol.buffer_updated(count)


class MemoryNet:
    """A connection factory (``connect``) over in-memory streams between listeners."""

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, int], Callable[[], asyncio.BaseProtocol]] = {}
        self.dials: list[tuple[float, tuple[str, int]]] = []  # (loop time, address) of each attempt

    def listen(self, address: tuple[str, int], factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.listeners[address] = factory

    async def connect(
        self, factory: Callable[[], asyncio.BaseProtocol], host: str, port: int, local_addr: tuple[str, int] | None
    ) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        loop = asyncio.get_running_loop()
        self.dials.append((loop.time(), (host, port)))
        accept = self.listeners.get((host, port))
        if accept is None:
            raise ConnectionRefusedError(f"nobody listens on {host}:{port} (in memory)")
        client, server = factory(), accept()
        ours = MemoryTransport(loop, client, (host, port))
        theirs = MemoryTransport(loop, server, local_addr or ("127.0.0.1", 40000 + len(self.dials)))
        ours.other, theirs.other = theirs, ours
        server.connection_made(theirs)
        client.connection_made(ours)
        return ours, client
