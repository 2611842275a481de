"""Resume data: trusted only when it provably still describes the files; kill -9 for real."""

from __future__ import annotations

import asyncio
import os
import random
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.storage import MULTI_FILES, PIECE, disk_truth, piece_of
from tests.support.torrents import Pad, content, make_torrent, random_bytes

from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import Info, Layout, encode_torrent
from p2pdist.storage import FileStorage
from p2pdist.storage.base import StorageError
from p2pdist.storage.resume import (
    MISSING,
    RACY_NS,
    FileState,
    ResumeData,
    data_files,
    decode_resume,
    encode_resume,
    file_state,
    layout_fingerprint,
    plan_start,
)


async def download(info: Info, data: bytes, folder: Path, resume: Path, pieces: list[int]) -> FileStorage:
    storage = FileStorage(info, folder, resume_path=resume)
    await storage.start()
    for index in pieces:
        assert await storage.put_piece(index, piece_of(info, data, index))
    await storage.save_resume()
    await storage.close()
    return storage


async def restart(info: Info, folder: Path, resume: Path, **options: object) -> tuple[set[int], list[tuple[int, int]]]:
    progress: list[tuple[int, int]] = []
    storage = FileStorage(info, folder, resume_path=resume, **options)  # type: ignore[arg-type]
    have = await storage.start(lambda done, total: progress.append((done, total)))
    result = set(have)
    await storage.close()
    return result, progress


def hashed(progress: list[tuple[int, int]]) -> int:
    return max((total for _, total in progress), default=0)


async def test_matching_resume_is_trusted_without_rehashing(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    resume = tmp_path / "r.resume"
    await download(info, data, tmp_path / "dl", resume, [0, 1, 5, 6])
    assert not resume.with_name("r.resume.tmp").exists()
    have, progress = await restart(info, tmp_path / "dl", resume)
    assert have == {0, 1, 5, 6} and hashed(progress) == 0

    # Same size and mtime but different bytes (the mtime put back after the edit): the change
    # time moved, so the file's pieces are re-hashed and the edited one is dropped.
    path = tmp_path / "dl" / "pkg.part" / "a.bin"
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    raw[3] ^= 1
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_size == stat.st_size
    have, progress = await restart(info, tmp_path / "dl", resume)
    assert have == {1, 5, 6}
    layout = Layout(info)
    # Only that file's pieces, and of those only 0 and 1: piece 2 lies past the end of the
    # partly written a.bin, so no hashing can make it good.
    assert hashed(progress) == 2 and set(layout.pieces_of_file(0)) == {0, 1, 2}

    # A file replaced by a copy with the same bytes, size and mtime is a new inode: re-hashed.
    other = tmp_path / "dl" / "pkg.part" / "sub" / "deeper" / "c.bin"
    shutil.copy2(other, other.with_name("copy"))
    os.replace(other.with_name("copy"), other)
    have, progress = await restart(info, tmp_path / "dl", resume)
    # Hashed: a.bin's 0 and 1 (still suspect: nothing saved resume data since) and c.bin's
    # readable 4, 5 and 6 (3 also touches the missing b.bin).
    assert have == {1, 5, 6} and hashed(progress) == 5


async def test_start_identity_is_what_the_start_up_check_judged(tmp_path: Path) -> None:
    """What the agent compares leased files with when it holds them again after a restart."""
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    resume = tmp_path / "r.resume"
    await download(meta.info, content(MULTI_FILES), tmp_path / "dl", resume, [0, 1, 5, 6])
    storage = FileStorage(meta.info, tmp_path / "dl", resume_path=resume)
    assert storage.start_identity is None
    await storage.start()
    try:
        judged = storage.start_identity
        assert judged is not None and judged == storage.file_identity_now()
        (tmp_path / "dl" / "pkg.part" / "a.bin").write_bytes(b"changed after the check")
        assert storage.file_identity_now() != judged and storage.start_identity == judged
    finally:
        await storage.close()


async def test_a_forged_resume_cannot_complete_a_short_package(tmp_path: Path) -> None:
    """Resume data claiming every piece, a truncated file whose size and mtime it matches."""
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    layout = Layout(info)
    resume = tmp_path / "resume"
    await download(info, data, tmp_path, resume, list(range(info.num_pieces)))
    victim = max(data_files(info), key=lambda i: info.files[i].length)
    path = tmp_path / "pkg.part" / Path(*info.files[victim].path[1:])
    cut = info.files[victim].length // 2
    before = path.stat()
    os.truncate(path, cut)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # an old mtime: not racy
    old = decode_resume(resume.read_bytes(), info, layout_fingerprint(info))
    assert old is not None
    states = list(old.files)
    states[victim] = file_state(path)  # the forger copies what stat says now
    forged = ResumeData(old.fingerprint, old.root, Bitfield(info.num_pieces, range(info.num_pieces)), tuple(states), old.clock_ns, frozenset())
    resume.write_bytes(encode_resume(forged))
    storage = FileStorage(info, tmp_path, resume_path=resume)
    have = await storage.start()
    short = set(range((info.files[victim].offset + cut) // info.piece_length, layout.pieces_of_file(victim).stop))
    assert short and not short & set(have), "pieces past the file's end were trusted"
    assert not storage.complete
    with pytest.raises(StorageError):
        await storage.finish()
    await storage.close()
    assert not (tmp_path / "pkg").exists()


async def test_finish_refuses_a_file_of_the_wrong_length(tmp_path: Path) -> None:
    """Belt and braces: whatever was trusted, completion needs every file at its exact length."""
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = FileStorage(info, tmp_path)
    await storage.start()
    for index in range(info.num_pieces):
        await storage.put_piece(index, piece_of(info, data, index))
    victim = max(data_files(info), key=lambda i: info.files[i].length)
    path = tmp_path / "pkg.part" / Path(*info.files[victim].path[1:])
    os.truncate(path, info.files[victim].length - 1)  # behind the storage's back
    with pytest.raises(StorageError, match="the torrent says"):
        await storage.finish()
    await storage.close()
    assert not (tmp_path / "pkg").exists()


async def test_missing_file_drops_its_pieces_without_error(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    resume = tmp_path / "resume"
    await download(info, data, tmp_path, resume, list(range(info.num_pieces)))
    (tmp_path / "pkg.part" / "z.bin").unlink()
    have, _ = await restart(info, tmp_path, resume)
    assert have == set(range(info.num_pieces)) - set(Layout(info).pieces_of_file(5))


async def test_resume_of_another_torrent_or_garbage_means_recheck(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    resume = tmp_path / "resume"
    await download(info, data, tmp_path, resume, [0, 2])
    good = resume.read_bytes()
    truth = disk_truth(info, data, tmp_path)
    assert truth == {0, 2}
    have, progress = await restart(info, tmp_path, resume, info_hash=b"\x01" * 20)
    assert have == truth and hashed(progress) > 0
    for broken in (b"", b"garbage", good[:-1], good + b"e", good.replace(b"p2pdist-resume/2", b"p2pdist-resume/9"), good.replace(b"p2pdist-resume/2", b"p2pdist-resume/1"), b"d" * 10**6):
        resume.write_bytes(broken)
        have, progress = await restart(info, tmp_path, resume)
        assert have == truth and hashed(progress) > 0
    resume.unlink()
    have, _ = await restart(info, tmp_path, resume)
    assert have == truth


async def test_save_right_after_writing_still_resumes_cleanly(tmp_path: Path) -> None:
    """A file written within the racy window is stat-ed again after it, not left suspect."""
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    storage = FileStorage(info, tmp_path, resume_path=tmp_path / "resume")
    await storage.start()
    for index in range(info.num_pieces):
        await storage.put_piece(index, piece_of(info, data, index))
    await storage.save_resume()
    await storage.close()
    have, progress = await restart(info, tmp_path, tmp_path / "resume")
    assert len(have) == info.num_pieces and hashed(progress) == 0


async def test_no_resume_path_means_no_file(tmp_path: Path) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    storage = FileStorage(meta.info, tmp_path / "dl")
    await storage.start()
    await storage.put_piece(0, piece_of(meta.info, data, 0))
    await storage.save_resume()
    await storage.close()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["pkg.part"]


class StalledStorage(FileStorage):
    """A real FileStorage whose worker stalls after writing piece ``stall`` (a slow disk)."""

    stall = -1
    written = threading.Event()
    release = threading.Event()

    def _store(self, index: int, data: memoryview) -> None:
        super()._store(index, data)
        if index == self.stall:
            self.written.set()
            self.release.wait(10)


async def test_piece_written_during_a_save_is_found_after_a_crash(tmp_path: Path) -> None:
    """Its bytes are on disk before the save stats the file, its bit is set after the save
    snapshots ``have``, and nothing writes that file again: only the "unsettled" mark in the
    resume data gets it re-hashed instead of lost."""
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    data = content(MULTI_FILES)
    info = meta.info
    resume = tmp_path / "resume"
    storage = StalledStorage(info, tmp_path, resume_path=resume)
    await storage.start()
    StalledStorage.stall = 0
    StalledStorage.written.clear()
    StalledStorage.release.clear()
    put = asyncio.ensure_future(storage.put_piece(0, piece_of(info, data, 0)))
    await asyncio.get_running_loop().run_in_executor(None, StalledStorage.written.wait, 10)
    await asyncio.sleep(2 * RACY_NS / 1e9)  # past the racy window: only "unsettled" can save it
    saved = asyncio.ensure_future(storage.save_resume())
    await asyncio.sleep(0.2)  # the save (and its racy-window pause) completes while piece 0 stalls
    assert saved.done() and not put.done()
    StalledStorage.release.set()
    assert await put and storage.have[0]
    await storage.close()  # a crash now: no later save, no later write to a.bin
    have, _ = await restart(info, tmp_path, resume)
    assert have == {0} == disk_truth(info, data, tmp_path)


def test_plan_trusts_only_settled_unchanged_files() -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    info = meta.info
    layout = Layout(info)
    clock = 10**18
    states = [FileState(f.length, clock - 10 * RACY_NS) if not f.pad else MISSING for f in info.files]
    claimed = Bitfield(info.num_pieces, range(info.num_pieces))
    base = ResumeData(layout_fingerprint(info), b"part", claimed, tuple(states), clock, frozenset())
    everything = set(range(info.num_pieces))
    assert plan_start(info, layout, base, b"part", states) == (everything, set())
    assert plan_start(info, layout, base, b"final", states) == (set(), everything)
    assert plan_start(info, layout, None, b"part", states) == (set(), everything)
    of_c = set(layout.pieces_of_file(4))
    unsettled = ResumeData(base.fingerprint, b"part", claimed, tuple(states), clock, frozenset({4}))
    assert plan_start(info, layout, unsettled, b"part", states) == (everything - of_c, of_c)
    racy_states = list(states)
    racy_states[4] = FileState(info.files[4].length, clock - RACY_NS // 2)
    racy = ResumeData(base.fingerprint, b"part", claimed, tuple(racy_states), clock, frozenset())
    assert plan_start(info, layout, racy, b"part", racy_states) == (everything - of_c, of_c)
    gone = list(states)
    gone[4] = MISSING
    assert plan_start(info, layout, base, b"part", gone) == (everything - of_c, set())


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_decoding_mangled_resume_data_never_raises(data: st.DataObject) -> None:
    _, meta = make_torrent(MULTI_FILES, piece_length=PIECE)
    info = meta.info
    fingerprint = layout_fingerprint(info)
    states = tuple(FileState(f.length, 123456789) for f in info.files)
    original = encode_resume(
        ResumeData(fingerprint, b"part", Bitfield(info.num_pieces, [1, 3]), states, 99, frozenset({2}))
    )
    assert decode_resume(original, info, fingerprint) is not None
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    result = decode_resume(bytes(raw[:cut]), info, fingerprint)
    if result is not None:
        assert len(result.pieces) == info.num_pieces and len(result.files) == len(info.files)
        assert all(0 <= i < len(info.files) for i in result.unsettled)


# ------------------------------------------------------------------------- kill -9 for real

CHILD = r"""
import asyncio, random, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from p2pdist.metainfo import read_metainfo
from p2pdist.storage import FileStorage

async def main(torrent, source, directory, resume, seed):
    info = read_metainfo(torrent).info
    data = Path(source).read_bytes()
    rng = random.Random(seed)
    storage = FileStorage(info, Path(directory), resume_path=Path(resume), executor=ThreadPoolExecutor(3))
    await storage.start()
    missing = list(storage.have.missing())
    print("ready", len(missing), flush=True)
    rng.shuffle(missing)
    piece = lambda i: data[i * info.piece_length : i * info.piece_length + info.piece_size(i)]
    writing = True

    async def saver():
        while writing:
            await storage.save_resume()
            await asyncio.sleep(rng.uniform(0, 0.01))

    saving = asyncio.create_task(saver())
    for start in range(0, len(missing), 4):
        batch = missing[start : start + 4]
        jobs = [storage.put_piece(i, piece(i)) for i in batch]
        if rng.random() < 0.3:
            bad = bytearray(piece(batch[0]))
            bad[rng.randrange(len(bad))] ^= 1
            jobs.append(storage.put_piece(batch[0], bytes(bad)))
        await asyncio.gather(*jobs)
        print("wrote", start + len(batch), flush=True)  # the parent kills by progress, not by clock
        await asyncio.sleep(0.004)
    writing = False
    await saving
    await storage.save_resume()
    await storage.finish()
    await storage.close()
    print("done", flush=True)

asyncio.run(main(*sys.argv[1:5], int(sys.argv[5])))
"""

# Many small files: a file whose last write raced a save is often never written again before
# the kill, which is exactly when "unsettled" and "racy" files must not be trusted.
_sizes = random.Random(5)
KILL_FILES: dict[str, bytes | Pad] = {"two/empty": b""}
for _i in range(48):
    if _i == 9:
        KILL_FILES[".pad/1"] = Pad(16_383)
    KILL_FILES[f"d{_i % 3}/f{_i}.bin"] = random_bytes(_sizes.randrange(1, 120_000), seed=7 + _i)


def test_kill_9_at_random_moments_never_claims_bad_data(tmp_path: Path) -> None:
    _, meta = make_torrent(KILL_FILES, piece_length=PIECE)
    data = content(KILL_FILES)
    info = meta.info
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(encode_torrent(meta.raw_info))
    source = tmp_path / "source"
    source.write_bytes(data)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    folder, resume = tmp_path / "dl", tmp_path / "state" / "resume"
    rng = random.Random(20240611)
    rounds, killed = 6, 0
    for round_ in range(rounds):
        child = subprocess.Popen(
            [sys.executable, "-u", str(script), str(torrent), str(source), str(folder), str(resume), str(round_)],
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = _lines_of(child)
        try:
            word, missing = _child_line(lines, child).split()
            assert word == "ready"
            # Kill once the child reports a random number of pieces written (at most a third of
            # what is missing, so every round has work left), a moment after that report: the
            # kill lands mid-write or mid-save by the child's progress, whatever the speed.
            batches = -(-int(missing) // 4)
            if round_ < rounds - 1 and batches >= 2:
                target = 4 * rng.randint(1, max(1, batches // 3))
                while int(_child_line(lines, child).split()[1]) < target:
                    pass
                time.sleep(rng.uniform(0, 0.01))
                assert child.poll() is None, "the child finished with two thirds of its pieces to write"
                child.send_signal(signal.SIGKILL)
                killed += 1
            assert child.wait(timeout=60) in (0, -signal.SIGKILL)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()

        have, _ = asyncio.run(restart(info, folder, resume))
        truth = disk_truth(info, data, folder)
        assert have <= truth, f"round {round_}: claims pieces whose data is wrong: {sorted(have - truth)[:10]}"
        assert have == truth, f"round {round_}: lost verified pieces {sorted(truth - have)[:10]}"
    assert killed == rounds - 1
    # The last round ran to the end: every piece verified, every file whole where it belongs.
    assert len(have) == info.num_pieces
    final = folder / info.name
    for entry in info.real_files:
        assert final.joinpath(*entry.path[1:]).read_bytes() == data[entry.offset : entry.offset + entry.length]


def _lines_of(child: subprocess.Popen[str]) -> queue.Queue[str]:
    """The child's stdout lines as they come ("" at its end), read by a thread."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    return lines


def _child_line(lines: queue.Queue[str], child: subprocess.Popen[str]) -> str:
    """The child's next line, waiting up to 60 s (a hang, not a speed)."""
    try:
        line = lines.get(timeout=60)
    except queue.Empty:
        raise AssertionError("the child said nothing for 60 s") from None
    assert line, f"the child ended early (exit {child.wait()})"
    return line
