"""The piece workers: hand-offs settle the caller's future on its loop, errors travel with them,
and one torrent's writes never overlap while its hashes may."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from tests.support.storage import MULTI_FILES, PIECE, piece_of
from tests.support.torrents import content, make_torrent

from p2pdist.storage import MemoryStorage
from p2pdist.storage.workers import PieceWorkers


@pytest.fixture
def workers() -> PieceWorkers:
    pool = PieceWorkers(3, name="test-piece")
    yield pool
    pool.shutdown()


async def test_results_and_errors_settle_on_the_callers_loop(workers: PieceWorkers) -> None:
    loop = asyncio.get_running_loop()
    threads: list[str] = []

    def work(value: int) -> int:
        threads.append(threading.current_thread().name)
        if value < 0:
            raise ValueError(f"negative {value}")
        return value * 2

    futures = [workers.submit(loop, work, value) for value in range(20)]
    assert await asyncio.gather(*futures) == [value * 2 for value in range(20)]
    assert all(name.startswith("test-piece-") for name in threads)
    with pytest.raises(ValueError, match="negative -1"):
        await workers.submit(loop, work, -1)


async def test_a_cancelled_caller_does_not_break_the_worker(workers: PieceWorkers) -> None:
    loop = asyncio.get_running_loop()
    release = threading.Event()
    blocked = workers.submit(loop, release.wait, 5)
    blocked.cancel()
    release.set()
    # The worker finishes the cancelled job and goes on with the next ones.
    assert await workers.submit(loop, lambda: "next") == "next"


def test_a_closed_loop_is_not_an_error_for_the_worker(workers: PieceWorkers) -> None:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "late"

    workers.submit(loop, slow)
    assert started.wait(5)
    loop.close()  # the caller is gone before the worker answers
    release.set()
    other = asyncio.new_event_loop()
    try:
        assert other.run_until_complete(workers.submit(other, lambda: "alive")) == "alive"
    finally:
        other.close()


class _Recording(MemoryStorage):
    """Counts how many ``_store`` calls overlap, and lets hashing be watched."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writing = 0
        self.most_writing = 0
        self.lock = threading.Lock()

    def _store(self, index: int, data: memoryview) -> None:
        with self.lock:
            self.writing += 1
            self.most_writing = max(self.most_writing, self.writing)
        time.sleep(0.01)  # long enough for the other workers to arrive
        super()._store(index, data)
        with self.lock:
            self.writing -= 1


async def test_one_torrent_writes_one_piece_at_a_time(workers: PieceWorkers) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    first, second = _Recording(info, piece_workers=workers), _Recording(info, piece_workers=workers)
    await first.start()
    await second.start()
    pieces = range(info.num_pieces)
    results = await asyncio.gather(
        *(first.submit_piece(index, piece_of(info, data, index)) for index in pieces),
        *(second.submit_piece(index, piece_of(info, data, index)) for index in pieces),
    )
    assert all(results) and first.complete and second.complete
    assert first.most_writing == 1 and second.most_writing == 1
    for index in pieces:
        assert await first.read_block(index, 0, 1) == piece_of(info, data, index)[:1]


async def test_a_cancelled_submit_still_records_what_the_worker_did() -> None:
    """The caller gives up on a piece while it waits for a worker: the worker still verifies and
    writes it, and ``have`` and the pending set follow what is on disk, not the caller."""
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    pool = PieceWorkers(1, name="test-cancel")
    try:
        storage = MemoryStorage(info, piece_workers=pool)
        await storage.start()
        loop = asyncio.get_running_loop()
        release = threading.Event()
        busy = pool.submit(loop, release.wait, 5)  # the only worker is busy
        given_up = storage.submit_piece(0, piece_of(info, data, 0))
        given_up.cancel()
        release.set()
        await busy
        assert await pool.submit(loop, lambda: "after") == "after"  # the piece's job ran before this one
        await asyncio.sleep(0)
        assert storage.have[0]
        assert not storage._pending_snapshot()
        assert await storage.read_block(0, 0, 4) == piece_of(info, data, 0)[:4]
    finally:
        pool.shutdown()
