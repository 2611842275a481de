"""Twins of FileStorage without a disk: for tests and network-only benchmarks.

Both still hash every piece in the executor, so the engine sees the same timing shape and the
same promise (only verified pieces in ``have``). ``MemoryStorage`` keeps the pieces in a dict and
can serve them; ``NullStorage`` keeps nothing (libtorrent's disabled_disk_io), so a leecher in
a benchmark costs no memory and no disk, and it cannot serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import Info
from p2pdist.storage.base import Storage, StorageError
from p2pdist.storage.verify import Buffer, Progress, piece_matches
from p2pdist.storage.workers import PieceWorkers


class MemoryStorage(Storage):
    """Verified pieces held in memory."""

    __slots__ = ("_pieces",)
    _inline_loads = True

    def __init__(self, info: Info, *, executor: Executor | None = None, piece_workers: PieceWorkers | None = None) -> None:
        super().__init__(info, executor=executor, cache_bytes=0, piece_workers=piece_workers)
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def from_data(cls, info: Info, data: bytes, *, executor: Executor | None = None) -> MemoryStorage:
        """A complete seed of ``data``; ValueError unless every piece verifies."""
        if len(data) != info.total_length:
            raise ValueError(f"data has {len(data)} bytes, the torrent {info.total_length}")
        storage = cls(info, executor=executor)
        view = memoryview(data)
        for index in range(info.num_pieces):
            start = index * info.piece_length
            piece = view[start : start + info.piece_size(index)]
            if not piece_matches(info, index, piece):
                raise ValueError(f"piece {index} of the data does not match the torrent's hash")
            storage._pieces[index] = bytes(piece)
            storage.have.set(index)
        return storage

    def _store(self, index: int, data: memoryview) -> None:
        self._pieces[index] = bytes(data)

    def _load(self, index: int, begin: int, length: int) -> bytes:
        try:
            return self._pieces[index][begin : begin + length]
        except KeyError:
            raise StorageError(f"piece {index} of {self.info.name!r} is not stored") from None

    def _read_candidate(self, index: int) -> Buffer | None:
        return self._pieces.get(index)

    def _in_memory(self, index: int) -> Buffer | None:
        return self._pieces.get(index)

    async def _recheck_candidates(self) -> Sequence[int]:
        return sorted(self._pieces)

    async def close(self) -> None:
        await super().close()
        self._pieces.clear()


class NullStorage(Storage):
    """Verifies hashes and keeps nothing; ``read_block`` raises StorageError.

    A recheck cannot re-read anything, so it keeps ``have`` as verified on arrival.
    """

    __slots__ = ()
    _inline_loads = True

    def __init__(self, info: Info, *, executor: Executor | None = None, piece_workers: PieceWorkers | None = None) -> None:
        super().__init__(info, executor=executor, cache_bytes=0, piece_workers=piece_workers)

    def _store(self, index: int, data: memoryview) -> None:
        return None

    def _load(self, index: int, begin: int, length: int) -> bytes:
        raise StorageError(f"null storage of {self.info.name!r} keeps no data to read")

    def _read_candidate(self, index: int) -> Buffer | None:
        return None

    def _in_memory(self, index: int) -> Buffer | None:
        raise StorageError(f"null storage of {self.info.name!r} keeps no data to serve")

    async def recheck(self, progress: Progress | None = None) -> Bitfield:
        self._check_open()
        if progress is not None:
            progress(self.info.num_pieces, self.info.num_pieces)
        return self.have
