"""One contract, three backends: FileStorage, MemoryStorage and NullStorage behave alike."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.storage import MULTI_FILES, PIECE, corrupt, piece_of
from tests.support.torrents import Pad, content, make_torrent, random_bytes

from p2pdist.metainfo import BLOCK_SIZE, Info
from p2pdist.storage import FileStorage, MemoryStorage, NullStorage, Storage, StorageError
from p2pdist.storage.verify import piece_matches, runs

Factory = Callable[[Info], Storage]
BACKENDS = ["file", "memory", "null"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Factory]:
    kind = request.param

    def build(info: Info) -> Storage:
        if kind == "file":
            return FileStorage(info, tmp_path / "dl", resume_path=tmp_path / "resume")
        if kind == "memory":
            return MemoryStorage(info)
        return NullStorage(info)

    return kind, build


async def fill(storage: Storage, data: bytes, indices: list[int] | None = None) -> None:
    info = storage.info
    for index in indices if indices is not None else range(info.num_pieces):
        assert await storage.put_piece(index, piece_of(info, data, index)) is True


async def test_start_empty_then_put_verify_read(backend: tuple[str, Factory]) -> None:
    kind, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    have = await storage.start()
    assert have is storage.have and have.count == 0 and not storage.complete
    assert await storage.put_piece(2, piece_of(info, data, 2)) is True
    assert list(storage.have) == [2]
    if kind == "null":
        with pytest.raises(StorageError):
            await storage.read_block(2, 0, BLOCK_SIZE)
    else:
        assert await storage.read_block(2, 100, 500) == piece_of(info, data, 2)[100:600]
    with pytest.raises(StorageError, match="not verified"):
        await storage.read_block(1, 0, BLOCK_SIZE)
    await storage.close()


async def test_bad_data_is_refused_and_changes_nothing(backend: tuple[str, Factory]) -> None:
    _, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    await storage.start()
    good = piece_of(info, data, 0)
    assert await storage.put_piece(0, corrupt(good)) is False
    assert await storage.put_piece(0, good[:-1]) is False  # wrong length: False, documented
    assert await storage.put_piece(0, good + b"x") is False
    assert await storage.put_piece(0, b"") is False
    assert storage.have.count == 0
    last = info.num_pieces - 1
    assert await storage.put_piece(last, piece_of(info, data, 0)[: info.piece_size(last)]) is False
    for index in (-1, info.num_pieces, 10**9):
        with pytest.raises(IndexError):
            await storage.put_piece(index, good)
        with pytest.raises(IndexError):
            await storage.read_block(index, 0, 1)
    assert storage.have.count == 0
    await storage.close()


async def test_read_block_rejects_ranges_outside_the_piece(backend: tuple[str, Factory]) -> None:
    kind, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    await storage.start()
    await fill(storage, data, [0])
    size = info.piece_size(0)
    for begin, length in ((-1, 10), (0, 0), (0, -5), (size - 10, 11), (size, 1), (0, size + 1)):
        with pytest.raises(ValueError):
            await storage.read_block(0, begin, length)
    if kind != "null":
        assert await storage.read_block(0, 0, size) == piece_of(info, data, 0)
    await storage.close()


async def test_all_buffer_types_and_repeated_puts(backend: tuple[str, Factory]) -> None:
    kind, build = backend
    data = random_bytes(50_000, seed=1)
    _, meta = make_torrent({"pkg": data}, single=True, piece_length=PIECE)
    info = meta.info
    storage = build(info)
    await storage.start()
    assert await storage.put_piece(0, bytearray(piece_of(info, data, 0)))
    assert await storage.put_piece(1, memoryview(piece_of(info, data, 1)))
    assert await storage.put_piece(2, memoryview(data)[2 * info.piece_length : 3 * info.piece_length])
    assert await storage.put_piece(1, piece_of(info, data, 1)) is True  # again: still True
    assert await storage.put_piece(1, corrupt(piece_of(info, data, 1))) is False
    assert storage.have[1] and storage.have.count == 3
    if kind != "null":
        assert await storage.read_block(1, 0, info.piece_size(1)) == piece_of(info, data, 1)
    await storage.close()


async def test_concurrent_puts_complete_and_finish(backend: tuple[str, Factory]) -> None:
    kind, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    await storage.start()
    with pytest.raises(StorageError, match="not verified"):
        await storage.finish()
    order = list(range(info.num_pieces))
    random.Random(3).shuffle(order)
    results = await asyncio.gather(*(storage.put_piece(i, piece_of(info, data, i)) for i in order))
    assert all(results) and storage.complete
    await storage.finish()
    await storage.finish()  # idempotent
    await storage.save_resume()
    assert storage.complete
    if kind != "null":
        blocks = [
            await storage.read_block(i, begin, min(BLOCK_SIZE, info.piece_size(i) - begin))
            for i in range(info.num_pieces)
            for begin in range(0, info.piece_size(i), BLOCK_SIZE)
        ]
        assert b"".join(blocks) == data
    await storage.close()


async def test_recheck_keeps_good_pieces_and_reports_progress(backend: tuple[str, Factory]) -> None:
    kind, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    await storage.start()
    await fill(storage, data, [0, 3, 4])
    seen: list[tuple[int, int]] = []
    have = await storage.recheck(lambda done, total: seen.append((done, total)))
    assert sorted(have) == [0, 3, 4]
    assert seen and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    await storage.close()


async def test_closed_storage_refuses_work(backend: tuple[str, Factory]) -> None:
    _, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    storage = build(meta.info)
    await storage.start()
    await storage.close()
    await storage.close()
    with pytest.raises(StorageError, match="closed"):
        await storage.put_piece(0, piece_of(meta.info, data, 0))
    with pytest.raises(StorageError, match="closed"):
        await storage.read_block(0, 0, 1)


def test_memory_from_data_is_a_seed_and_checks_its_input() -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    seed = MemoryStorage.from_data(meta.info, data)
    assert seed.complete

    async def read_all() -> bytes:
        info = meta.info
        return b"".join([await seed.read_block(i, 0, info.piece_size(i)) for i in range(info.num_pieces)])

    assert asyncio.run(read_all()) == data
    with pytest.raises(ValueError, match="bytes"):
        MemoryStorage.from_data(meta.info, data[:-1])
    broken = bytearray(data)
    broken[meta.info.piece_length + 7] ^= 1
    with pytest.raises(ValueError, match="piece 1"):
        MemoryStorage.from_data(meta.info, bytes(broken))


def test_verify_runs_group_consecutive_pieces() -> None:
    assert runs([5, 1, 2, 3, 9, 10], 1 << 20, 2 << 20) == [(1, 2), (3, 1), (5, 1), (9, 2)]
    assert runs([], 1 << 20) == []
    data = random_bytes(40_000, seed=1)
    _, meta = make_torrent({"pkg": data}, single=True, piece_length=PIECE)
    assert piece_matches(meta.info, 0, piece_of(meta.info, data, 0))
    assert not piece_matches(meta.info, 0, None)
    assert not piece_matches(meta.info, 0, piece_of(meta.info, data, 0)[:-1])


# A whole download in random order, with random file layouts, read back block by block.
layouts = st.lists(
    st.tuples(st.integers(0, 40_000), st.booleans()), min_size=1, max_size=6
).filter(lambda files: sum(length for length, _ in files) > 0)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=layouts, kind=st.sampled_from(["file", "memory"]), seed=st.integers(0, 1000))
def test_random_layouts_round_trip(tmp_path: Path, files: list[tuple[int, bool]], kind: str, seed: int) -> None:
    layout = {
        f"f{i}": Pad(length) if pad and 0 < i < len(files) - 1 else random_bytes(length, seed=seed + i)
        for i, (length, pad) in enumerate(files)
    }
    _, meta = make_torrent(layout, piece_length=PIECE)
    data = content(layout)
    info = meta.info
    folder = Path(tempfile.mkdtemp(dir=tmp_path))

    async def scenario() -> bytes:
        storage: Storage = FileStorage(info, folder) if kind == "file" else MemoryStorage(info)
        await storage.start()
        order = list(range(info.num_pieces))
        random.Random(seed).shuffle(order)
        for index in order:
            assert await storage.put_piece(index, piece_of(info, data, index))
        await storage.finish()
        out = bytearray()
        for index in range(info.num_pieces):
            size = info.piece_size(index)
            for begin in range(0, size, 5000):
                out += await storage.read_block(index, begin, min(5000, size - begin))
        await storage.close()
        return bytes(out)

    assert asyncio.run(scenario()) == data
    if kind == "file":
        root = folder / info.name
        for entry in info.files:
            path = root.joinpath(*entry.path[1:])
            if entry.pad:
                assert not path.exists()
            else:
                assert path.read_bytes() == data[entry.offset : entry.offset + entry.length]



async def test_cached_piece_is_a_view_once_the_piece_is_in_memory(backend: tuple[str, Factory]) -> None:
    kind, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    await storage.start()
    await fill(storage, data, [1])
    with pytest.raises(StorageError, match="not verified"):
        storage.cached_piece(0)
    if kind == "null":
        with pytest.raises(StorageError, match="keeps no data"):
            storage.cached_piece(1)
    else:
        if kind == "file":
            await storage.read_block(1, 0, BLOCK_SIZE)  # a disk read brings the whole piece in
        view = storage.cached_piece(1)
        assert isinstance(view, memoryview) and bytes(view) == piece_of(info, data, 1)
    await storage.close()


async def test_submit_piece_settles_have_before_the_callers_callbacks(backend: tuple[str, Factory]) -> None:
    _, build = backend
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = build(info)
    await storage.start()
    seen: list[tuple[bool, bool]] = []
    good = storage.submit_piece(3, piece_of(info, data, 3))
    good.add_done_callback(lambda f: seen.append((f.result(), storage.have[3])))
    bad = storage.submit_piece(4, bytes(len(piece_of(info, data, 4))))
    bad.add_done_callback(lambda f: seen.append((f.result(), storage.have[4])))
    short = storage.submit_piece(5, b"too short")
    assert await asyncio.gather(good, bad, short) == [True, False, False]
    assert sorted(seen) == [(False, False), (True, True)]  # the workers may finish in either order
    assert list(storage.have) == [3]
    await storage.close()
