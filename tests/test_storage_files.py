"""FileStorage on real files: mapping, staging and the final rename, paths, descriptors, disk full."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from pathlib import Path

import pytest
from tests.support.storage import MULTI_FILES, PIECE, corrupt, piece_of
from tests.support.torrents import content, make_torrent, random_bytes

from p2pdist.metainfo import BLOCK_SIZE, Info
from p2pdist.storage import FileStorage, StorageError
from p2pdist.storage.handles import read_into, write_at


def write_final(info: Info, data: bytes, directory: Path) -> None:
    """Lay the torrent's files out under their final names, as an admin's folder would be."""
    for entry in info.real_files:
        path = directory.joinpath(*entry.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[entry.offset : entry.offset + entry.length])


async def test_multi_file_staging_then_atomic_finish(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = FileStorage(info, tmp_path)
    await storage.start()
    staging, final = tmp_path / "pkg.part", tmp_path / "pkg"
    assert not staging.exists() and not final.exists()  # nothing is created before a write

    assert await storage.put_piece(0, piece_of(info, data, 0))
    assert sorted(p.name for p in staging.iterdir()) == ["a.bin"]  # only files piece 0 touches
    for index in range(1, info.num_pieces):
        assert await storage.put_piece(index, piece_of(info, data, index))
    assert storage.staged and not final.exists()
    await storage.finish()
    assert not staging.exists() and not storage.staged
    for entry in info.files:
        path = final.joinpath(*entry.path[1:])
        if entry.pad:
            assert not path.exists() and not (final / ".pad").exists()
        else:
            assert path.read_bytes() == data[entry.offset : entry.offset + entry.length]
    # serving continues from the final names, through new descriptors
    assert await storage.read_block(info.num_pieces - 1, 0, 100) == piece_of(info, data, info.num_pieces - 1)[:100]
    await storage.finish()
    await storage.close()


async def test_single_file_is_staged_as_part_file(tmp_path: Path) -> None:
    data = random_bytes(100_000, seed=1)
    _, meta = make_torrent({"setup.msi": data}, single=True, name="setup.msi", piece_length=PIECE)
    info = meta.info
    storage = FileStorage(info, tmp_path / "cache")
    await storage.start()
    await asyncio.gather(*(storage.put_piece(i, piece_of(info, data, i)) for i in range(info.num_pieces)))
    assert (tmp_path / "cache" / "setup.msi.part").is_file()
    assert not (tmp_path / "cache" / "setup.msi").exists()
    await storage.finish()
    assert (tmp_path / "cache" / "setup.msi").read_bytes() == data
    assert not (tmp_path / "cache" / "setup.msi.part").exists()
    await storage.close()


async def test_existing_final_data_is_verified_and_seeded_in_place(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    write_final(info, data, tmp_path)
    storage = FileStorage(info, tmp_path)
    have = await storage.start()
    assert have.all() and not storage.staged
    await storage.finish()
    assert not (tmp_path / "pkg.part").exists()
    assert await storage.read_block(1, 0, BLOCK_SIZE) == piece_of(info, data, 1)[:BLOCK_SIZE]
    await storage.close()


async def test_bad_final_data_is_found_and_repaired_in_place_never_renamed_over(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    write_final(info, data, tmp_path)
    target = tmp_path / "pkg" / "sub" / "deeper" / "c.bin"
    raw = bytearray(target.read_bytes())
    raw[20_000] ^= 0x55
    target.write_bytes(bytes(raw))
    (tmp_path / "pkg" / "z.bin").unlink()
    storage = FileStorage(info, tmp_path)
    have = await storage.start()
    bad = {(info.files[4].offset + 20_000) // info.piece_length, *storage.layout.pieces_of_file(5)}
    assert set(have.missing()) == bad
    for index in sorted(bad):
        assert await storage.put_piece(index, piece_of(info, data, index))
    await storage.finish()
    assert not (tmp_path / "pkg.part").exists()
    assert target.read_bytes() == data[info.files[4].offset : info.files[4].offset + info.files[4].length]
    assert (tmp_path / "pkg" / "z.bin").read_bytes() == data[-16_384:]
    await storage.close()


async def test_finish_refuses_to_rename_over_a_folder_that_appeared(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = FileStorage(info, tmp_path)
    await storage.start()
    for index in range(info.num_pieces):
        await storage.put_piece(index, piece_of(info, data, index))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mine.txt").write_text("user data")
    with pytest.raises(StorageError, match="already exists"):
        await storage.finish()
    assert (tmp_path / "pkg" / "mine.txt").read_text() == "user data"
    assert (tmp_path / "pkg.part" / "a.bin").exists()
    await storage.close()


async def test_final_name_of_the_wrong_kind_is_an_error(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    (tmp_path / "pkg").write_text("a file where the package folder belongs")
    with pytest.raises(StorageError, match="not a folder"):
        await FileStorage(meta.info, tmp_path).start()
    _, single = make_torrent({"one.bin": random_bytes(20_000, seed=1)}, single=True, name="one.bin", piece_length=PIECE)
    (tmp_path / "one.bin").mkdir()
    with pytest.raises(StorageError, match="not a regular file"):
        await FileStorage(single.info, tmp_path).start()


async def test_never_writes_through_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "pkg.part").symlink_to(outside, target_is_directory=True)
    storage = FileStorage(info, folder)
    await storage.start()
    with pytest.raises(StorageError, match="outside"):
        await storage.put_piece(0, piece_of(info, data, 0))
    assert list(outside.iterdir()) == [] and storage.have.count == 0
    await storage.close()


async def test_call_start_first(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    storage = FileStorage(meta.info, tmp_path)
    with pytest.raises(StorageError, match="start"):
        await storage.put_piece(0, piece_of(meta.info, data, 0))


async def test_recheck_finds_corruption_on_disk(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = FileStorage(info, tmp_path)
    await storage.start()
    for index in range(info.num_pieces):
        await storage.put_piece(index, piece_of(info, data, index))
    await storage.read_block(0, 0, 10)  # piece 0 now cached: recheck must still read the disk
    path = tmp_path / "pkg.part" / "a.bin"
    raw = bytearray(path.read_bytes())
    raw[5] ^= 1
    path.write_bytes(bytes(raw))
    progress: list[tuple[int, int]] = []
    have = await storage.recheck(lambda done, total: progress.append((done, total)))
    assert set(have.missing()) == {0}
    assert progress[-1] == (info.num_pieces, info.num_pieces)
    with pytest.raises(StorageError, match="not verified"):
        await storage.read_block(0, 0, 10)
    await storage.close()


class CountingStorage(FileStorage):
    """Counts whole-piece reads (a real subclass, the disk is real)."""

    loads = 0

    def _load(self, index: int, begin: int, length: int) -> bytes:
        type(self).loads += 1
        return super()._load(index, begin, length)


async def test_block_reads_of_one_piece_cost_one_disk_read(tmp_path: Path) -> None:
    data = random_bytes(300_000, seed=1)
    _, meta = make_torrent({"pkg": data}, single=True, piece_length=64 * 1024)
    info = meta.info
    storage = CountingStorage(info, tmp_path, cache_bytes=256 * 1024)
    await storage.start()
    for index in range(info.num_pieces):
        await storage.put_piece(index, piece_of(info, data, index))
    CountingStorage.loads = 0
    blocks = await asyncio.gather(*(storage.read_block(1, b, BLOCK_SIZE) for b in range(0, 65536, BLOCK_SIZE)))
    assert b"".join(blocks) == piece_of(info, data, 1)
    assert CountingStorage.loads == 1
    for index in range(info.num_pieces):  # touch every piece: the LRU stays within its bound
        await storage.read_block(index, 0, 1)
    assert storage._cache.size <= 256 * 1024 and len(storage._cache) == 4
    await storage.close()


async def test_descriptor_cache_stays_bounded(tmp_path: Path) -> None:
    files = {f"f{i}.bin": random_bytes(20_000 + i, seed=i) for i in range(9)}
    _, meta = make_torrent(files, piece_length=PIECE)
    data = content(files)
    info = meta.info
    storage = FileStorage(info, tmp_path, max_open_files=2)
    await storage.start()
    results = await asyncio.gather(*(storage.put_piece(i, piece_of(info, data, i)) for i in range(info.num_pieces)))
    assert all(results)
    assert len(storage._handles) <= 2
    assert await storage.recheck() is storage.have and storage.complete
    await storage.finish()
    await storage.close()
    if os.path.isdir("/proc/self/fd"):  # every descriptor is closed after close()
        targets = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        assert not [t for t in targets if t.startswith(str(tmp_path))]


def test_seek_fallback_for_systems_without_pwrite(tmp_path: Path) -> None:
    """Windows has no pwrite: seek+write under a per-file lock must be safe across threads."""
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    lock = threading.Lock()
    chunk = 4096
    try:
        def worker(slot: int) -> None:
            for round_ in range(20):
                write_at(fd, memoryview(bytes([slot]) * chunk), (round_ * 8 + slot) * chunk, lock, positional=False)

        threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        expected = b"".join(bytes([slot]) * chunk for _ in range(20) for slot in range(8))
        buffer = bytearray(len(expected) + 100)
        assert read_into(fd, memoryview(buffer), 0, lock, positional=False) == len(expected)
        assert bytes(buffer[: len(expected)]) == expected
        pread_buffer = bytearray(chunk)
        assert read_into(fd, memoryview(pread_buffer), 3 * chunk, lock, positional=True) == chunk
        assert bytes(pread_buffer) == bytes([3]) * chunk
    finally:
        os.close(fd)


# ------------------------------------------------------------------------- disk full (tmpfs)


@pytest.fixture
def small_disk(tmp_path: Path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True, timeout=10
    )
    if result.returncode:
        reason = f"cannot mount a 1 MiB tmpfs (needs root): {result.stderr.strip()}"
        print(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10)


async def test_disk_full_is_reported_and_recoverable(small_disk: Path, tmp_path: Path) -> None:
    data = random_bytes(3 * 256 * 1024, seed=1)
    _, meta = make_torrent({"big.bin": data}, single=True, piece_length=256 * 1024, name="big.bin")
    info = meta.info
    filler = small_disk / "filler"
    filler.write_bytes(b"\x01" * (640 * 1024))
    storage = FileStorage(info, small_disk / "dl", resume_path=tmp_path / "resume")
    await storage.start()
    assert await storage.put_piece(0, piece_of(info, data, 0))
    with pytest.raises(StorageError) as caught:
        await storage.put_piece(1, piece_of(info, data, 1))
    assert caught.value.disk_full and "big.bin.part" in str(caught.value)
    assert list(storage.have) == [0]
    await storage.save_resume()
    assert list(await storage.recheck()) == [0]  # the partly written piece 1 is not claimed
    filler.unlink()
    assert await storage.put_piece(1, piece_of(info, data, 1))
    assert await storage.put_piece(2, piece_of(info, data, 2))
    await storage.finish()
    assert (small_disk / "dl" / "big.bin").read_bytes() == data
    await storage.close()
    again = FileStorage(info, small_disk / "dl", resume_path=tmp_path / "resume")
    assert (await again.start()).all()
    await again.close()


async def test_corrupt_piece_is_never_written(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = FileStorage(info, tmp_path)
    await storage.start()
    assert not await storage.put_piece(0, corrupt(piece_of(info, data, 0)))
    assert not (tmp_path / "pkg.part").exists()
    await storage.close()
