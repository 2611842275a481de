"""The storage contract the engine programs against, and the logic every backend shares.

A ``Storage`` holds the pieces of one torrent. Its one promise: a piece is in ``have`` only after
its SHA-1 matched, so nothing unverified is ever announced or served. Everything that hashes or
touches a disk runs in worker threads; the event loop only sets bits. ``put_piece`` hashes and
writes in the same call on the piece workers (one hop per piece, see ``storage.workers``; one
torrent writes one piece at a time, hashes run in parallel), and ``read_block`` keeps a small LRU
of whole pieces so serving the sixteen 16 KiB blocks of a 256 KiB piece costs one read and one
hop on the I/O pool.

Backends implement a few synchronous hooks (``_store``, ``_load``, ``_read_candidate``) that run
in worker threads; the coroutines here do the validation, the bookkeeping of ``have`` and the
hops. ``have`` is only ever changed on the event loop's thread."""

from __future__ import annotations

import abc
import asyncio
import functools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar

from p2pdist.bitfield import Bitfield
from p2pdist.errors import LocalError
from p2pdist.metainfo import Info, Layout
from p2pdist.storage.verify import Buffer, Progress, sha1, verify_pieces
from p2pdist.storage.workers import PieceWorkers, default_piece_workers

T = TypeVar("T")

DEFAULT_CACHE_BYTES = 8 << 20


class StorageError(LocalError):
    """Local I/O failed (or the caller asked for something storage cannot give).

    ``disk_full`` is True for ENOSPC/EDQUOT, so the engine can stop this one download (and retry
    later) instead of treating the torrent as broken. Messages name the file involved.
    """

    def __init__(self, message: str, *, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def grown(items: set[T] | None, more: Iterable[T]) -> set[T] | None:
    """``items`` with ``more`` added. Bookkeeping sets of storage are None while empty: a
    complete package keeps none of them, for months, and an agent holds a thousand."""
    items = set() if items is None else items
    items.update(more)
    return items or None


def shrunk(items: set[T] | None, less: Iterable[T]) -> set[T] | None:
    """``items`` without ``less``, None once empty (see ``grown``)."""
    if items is None:
        return None
    items.difference_update(less)
    return items or None


def default_executor() -> ThreadPoolExecutor:
    """The process-wide hashing and I/O pool: one worker per core, created on first use."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="p2pdist-storage")
        return _executor


class PieceCache:
    """Whole verified pieces, least recently used first, bounded in bytes."""

    __slots__ = ("capacity", "_pieces", "_size")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(0, capacity)
        # Oldest first: a plain dict keeps insertion order at a third of an OrderedDict's size.
        self._pieces: dict[int, bytes] = {}
        self._size = 0

    def get(self, index: int) -> bytes | None:
        piece = self._pieces.pop(index, None)
        if piece is not None:
            self._pieces[index] = piece  # now the most recently used
        return piece

    def put(self, index: int, piece: bytes) -> None:
        if len(piece) > self.capacity:
            return
        self.discard(index)
        self._pieces[index] = piece
        self._size += len(piece)
        while self._size > self.capacity:
            oldest = self._pieces.pop(next(iter(self._pieces)))
            self._size -= len(oldest)

    def discard(self, index: int) -> None:
        piece = self._pieces.pop(index, None)
        if piece is not None:
            self._size -= len(piece)

    def clear(self) -> None:
        self._pieces.clear()
        self._size = 0

    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def size(self) -> int:
        return self._size


class Storage(abc.ABC):
    """Pieces of one torrent; see the module docstring for the threading rules.

    Hostile or wrong input: an out-of-range piece index raises IndexError; ``put_piece`` with
    data of the wrong length returns False (it is not that piece, exactly like a hash mismatch)
    and writes nothing; ``read_block`` with a range outside the piece raises ValueError and on a
    piece not in ``have`` raises StorageError.
    """

    # One per held package, a thousand in an idle agent: no per-instance dict.
    __slots__ = (
        "info", "layout", "have", "_executor", "_piece_workers", "_cache", "_loading", "_closed", "_pending_lock",
        "_pending", "_write_lock", "_recheck_lock", "_verified_meanwhile",
    )

    info: Info
    layout: Layout
    have: Bitfield

    #: True when ``_load`` is cheap enough to run on the loop (memory); disk backends hop.
    _inline_loads = False

    def __init__(
        self,
        info: Info,
        *,
        executor: Executor | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        piece_workers: PieceWorkers | None = None,
    ) -> None:
        self.info = info
        self.layout = Layout(info)
        self.have = Bitfield(info.num_pieces)
        self._executor = executor if executor is not None else default_executor()
        self._piece_workers = piece_workers if piece_workers is not None else default_piece_workers()
        self._cache = PieceCache(cache_bytes)
        self._loading: dict[int, asyncio.Future[bytes]] = {}
        self._closed = False
        # Pieces whose write has started but whose bit is not set yet (read by save_resume
        # from a worker thread, hence the lock).
        self._pending_lock = threading.Lock()
        self._pending: set[int] | None = None  # a set only while a write is in flight
        # One piece written at a time per torrent; hashing stays parallel (see storage.workers).
        self._write_lock = threading.Lock()
        self._recheck_lock: asyncio.Lock | None = None
        self._verified_meanwhile: set[int] | None = None

    # ----------------------------------------------------------------- hooks (worker threads)

    @abc.abstractmethod
    def _store(self, index: int, data: memoryview) -> None:
        """Write a verified piece; raise StorageError on failure."""

    @abc.abstractmethod
    def _load(self, index: int, begin: int, length: int) -> bytes:
        """Read part of a verified piece; raise StorageError on failure."""

    @abc.abstractmethod
    def _read_candidate(self, index: int) -> Buffer | None:
        """The bytes a piece would have, or None when they cannot be read (for verification)."""

    def _read_run(self, first: int, count: int) -> Sequence[Buffer | None]:
        return [self._read_candidate(first + offset) for offset in range(count)]

    async def _recheck_candidates(self) -> Iterable[int]:
        """Pieces worth hashing in a full recheck (those whose data could exist)."""
        return range(self.info.num_pieces)

    # ----------------------------------------------------------------- shared plumbing

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"storage of {self.info.name!r} is closed")

    def _check_ready(self) -> None:
        """Open and, for backends that need it, started."""
        self._check_open()

    @property
    def complete(self) -> bool:
        return self.have.all()

    # ----------------------------------------------------------------- the contract

    async def start(self, progress: Progress | None = None) -> Bitfield:
        """Open and find what is already verified; returns ``have``."""
        self._check_open()
        return self.have

    async def put_piece(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """Verify then store a whole piece in one worker call.

        False on a hash or length mismatch (nothing written, ``have`` unchanged). True and the
        bit set on success. StorageError on I/O failure, ``have`` unchanged. The caller must not
        change ``data`` until this returns. Cancelling the caller does not stop the worker: the
        piece stays pending (never trusted by ``save_resume``) until the worker is done.
        """
        return await asyncio.shield(self.submit_piece(index, data))

    def submit_piece(self, index: int, data: bytes | bytearray | memoryview) -> asyncio.Future[bool]:
        """``put_piece`` as a future, for callers that settle pieces in a done-callback rather
        than a task per piece (the engine's receive path). ``have`` and the pending set are
        updated when the worker is done, before any callback added to the returned future, and
        also when that future was cancelled meanwhile."""
        self._check_ready()
        loop = asyncio.get_running_loop()
        size = self.layout.piece_size(index)
        view = memoryview(data)
        if view.nbytes != size:
            mismatch: asyncio.Future[bool] = loop.create_future()
            mismatch.set_result(False)
            return mismatch
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        already = self.have[index]
        return self._piece_workers.submit(loop, self._verify_and_store, index, view, already, on_done=functools.partial(self._stored, index))

    def _stored(self, index: int, error: BaseException | None, verified: object) -> None:
        """The worker is done with piece ``index`` (on the loop, before the caller hears of it,
        and even if the caller cancelled): the bit and the pending set follow the disk."""
        if error is None and verified and not self._closed:
            self.have.set(index)
            if self._verified_meanwhile is not None:
                self._verified_meanwhile.add(index)
        self._unpend(index)

    def _verify_and_store(self, index: int, view: memoryview, already: bool) -> bool:
        if sha1(view) != self.info.piece_hash(index):
            return False
        if already:
            return True
        with self._pending_lock:
            self._pending = grown(self._pending, (index,))
        with self._write_lock:
            self._store(index, view)
        return True

    def _unpend(self, index: int) -> None:
        with self._pending_lock:
            self._pending = shrunk(self._pending, (index,))

    def _pending_snapshot(self) -> set[int]:
        with self._pending_lock:
            return set(self._pending or ())

    def _servable(self, index: int, begin: int, length: int) -> int:
        """Check a block request against the piece and ``have``; returns the piece size."""
        self._check_ready()
        size = self.layout.piece_size(index)
        if begin < 0 or length <= 0 or begin + length > size:
            raise ValueError(f"block {begin}+{length} outside piece {index} of {size} bytes")
        if not self.have[index]:
            raise StorageError(f"piece {index} of {self.info.name!r} is not verified")
        return size

    async def read_block(self, index: int, begin: int, length: int) -> bytes:
        """``length`` bytes at ``begin`` of a verified piece."""
        size = self._servable(index, begin, length)
        if self._inline_loads:
            return self._load(index, begin, length)
        if size > self._cache.capacity // 2:
            return await self._run(self._load, index, begin, length)
        piece = self._cache.get(index)
        if piece is None:
            piece = await self._load_whole(index, size)
        return piece[begin : begin + length]

    def cached_piece(self, index: int) -> memoryview | None:
        """A whole verified piece when it is already in memory, as a view (no copy), else None.

        The upload path serves a run of requests for one piece from one lookup; when this is
        None it awaits ``read_block``, which loads the piece into the cache.
        """
        self._check_ready()
        if not self.have[index]:
            raise StorageError(f"piece {index} of {self.info.name!r} is not verified")
        piece = self._in_memory(index)
        return None if piece is None else memoryview(piece)

    def _in_memory(self, index: int) -> Buffer | None:
        return self._cache.get(index)

    async def _load_whole(self, index: int, size: int) -> bytes:
        """Read a piece once however many blocks of it are requested at the same time."""
        task = self._loading.get(index)
        if task is None:
            task = asyncio.ensure_future(self._run(self._load, index, 0, size))
            self._loading[index] = task

            def settle(done: asyncio.Future[bytes]) -> None:
                self._loading.pop(index, None)
                if not done.cancelled() and done.exception() is None and self.have[index]:
                    self._cache.put(index, done.result())

            task.add_done_callback(settle)
        return await asyncio.shield(task)

    async def file_identity(self) -> tuple[object, ...]:
        """What says the files on disk are the ones checked: () where there are no files."""
        return ()

    async def recheck(self, progress: Progress | None = None) -> Bitfield:
        """Hash every piece again on every core; ``have`` becomes exactly what verifies."""
        self._check_ready()
        if self._recheck_lock is None:
            self._recheck_lock = asyncio.Lock()
        async with self._recheck_lock:
            candidates = await self._recheck_candidates()
            good = await self._verify(candidates, progress)
            self._replace_have(good, range(self.info.num_pieces))
        return self.have

    async def _verify(self, indices: Iterable[int], progress: Progress | None) -> set[int]:
        """Hash ``indices``; pieces that ``put_piece`` verifies meanwhile count as good."""
        self._verified_meanwhile = set()
        try:
            good = await verify_pieces(
                self.info, self._read_candidate, indices, self._executor, read_run=self._read_run, progress=progress
            )
            return good | self._verified_meanwhile
        finally:
            self._verified_meanwhile = None

    def _replace_have(self, good: set[int], scope: Iterable[int]) -> None:
        """Make ``have`` equal ``good`` over ``scope`` (in place: others hold a reference)."""
        scope_set = scope if isinstance(scope, range) else set(scope)
        for index in list(self.have):
            if index in scope_set and index not in good:
                self.have.clear(index)
                self._cache.discard(index)
        for index in good:
            self.have.set(index)

    async def save_resume(self) -> None:
        """Persist which pieces are verified (nothing to do unless a backend keeps files)."""
        self._check_ready()

    async def finish(self) -> None:
        """Make a complete torrent final; StorageError if pieces are missing."""
        self._check_ready()
        self._require_complete()

    def _require_complete(self) -> None:
        if not self.complete:
            missing = self.info.num_pieces - self.have.count
            raise StorageError(f"cannot finish {self.info.name!r}: {missing} pieces are not verified")

    async def close(self) -> None:
        """Release resources; later calls raise StorageError. Idempotent."""
        self._closed = True
        self._cache.clear()
