"""Piece hashing, one piece at a time or a whole torrent on every core.

``hashlib`` releases the GIL while it hashes more than 2 KiB, so a thread pool hashes on every
core at once. A recheck reads runs of consecutive pieces (a few MiB per worker call) so the disk
sees large sequential reads and the event loop sees one completion per run, not per piece, and
it keeps only about two runs per worker in flight so a recheck never floods a shared executor
with work queued ahead of other torrents' writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import Union

from p2pdist.metainfo import Info

Buffer = Union[bytes, bytearray, memoryview]
ReadPiece = Callable[[int], Union[Buffer, None]]
ReadRun = Callable[[int, int], Sequence[Union[Buffer, None]]]
Progress = Callable[[int, int], None]

DEFAULT_RUN_BYTES = 8 << 20


def sha1(data: Buffer) -> bytes:
    return hashlib.sha1(data).digest()


def piece_matches(info: Info, index: int, data: Buffer | None) -> bool:
    """True when ``data`` is exactly piece ``index`` (right length and SHA-1)."""
    if data is None:
        return False
    size = memoryview(data).nbytes
    return size == info.piece_size(index) and sha1(data) == info.piece_hash(index)


def runs(indices: Iterable[int], piece_length: int, run_bytes: int = DEFAULT_RUN_BYTES) -> list[tuple[int, int]]:
    """Group sorted piece indices into ``(first, count)`` runs of consecutive pieces."""
    per_run = max(1, run_bytes // piece_length)
    result: list[tuple[int, int]] = []
    for index in sorted(set(indices)):
        if result:
            first, count = result[-1]
            if first + count == index and count < per_run:
                result[-1] = (first, count + 1)
                continue
        result.append((index, 1))
    return result


def _default_parallelism(executor: Executor) -> int:
    workers = getattr(executor, "_max_workers", None)
    return workers if isinstance(workers, int) and workers > 0 else os.cpu_count() or 1


async def verify_pieces(
    info: Info,
    read_piece: ReadPiece,
    indices: Iterable[int],
    executor: Executor,
    *,
    read_run: ReadRun | None = None,
    progress: Progress | None = None,
    run_bytes: int = DEFAULT_RUN_BYTES,
    parallel: int | None = None,
) -> set[int]:
    """Hash the given pieces in ``executor`` and return the indices whose data matches.

    ``read_piece(index)`` returns the piece's bytes or None when they cannot be read (a missing
    or short file); ``read_run(first, count)``, when given, returns ``count`` such values in one
    call so a storage can serve a run with one large read. Both run in worker threads.
    ``progress(done, total)`` is called on the event loop as runs finish.
    """
    plan = runs(indices, info.piece_length, run_bytes)
    total = sum(count for _, count in plan)
    loop = asyncio.get_running_loop()

    def check_run(first: int, count: int) -> list[int]:
        if read_run is not None:
            pieces = read_run(first, count)
        else:
            pieces = [read_piece(first + offset) for offset in range(count)]
        return [first + offset for offset, data in enumerate(pieces) if piece_matches(info, first + offset, data)]

    good: set[int] = set()
    done = 0
    window = max(1, parallel or _default_parallelism(executor)) * 2
    pending: set[asyncio.Future[list[int]]] = set()
    sizes: dict[asyncio.Future[list[int]], int] = {}
    queue = iter(plan)
    try:
        while True:
            while len(pending) < window:
                item = next(queue, None)
                if item is None:
                    break
                future = loop.run_in_executor(executor, check_run, *item)
                pending.add(future)
                sizes[future] = item[1]
            if not pending:
                break
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for future in finished:
                good.update(future.result())
                done += sizes.pop(future)
            if progress is not None:
                progress(done, total)
    finally:
        for future in pending:
            future.cancel()
    return good
