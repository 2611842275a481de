"""Resume data: which pieces were verified, and the file states that make that claim checkable.

The file is bencoded::

    {"format": "p2pdist-resume/2", "info": <20-byte info-hash or layout fingerprint>,
     "root": "part" | "final", "pieces": <bitfield>, "clock": <ns before the stats>,
     "files": [[size, mtime_ns, ctime_ns, inode], ...one per FileEntry, size -1 when missing],
     "unsettled": [file indices with a piece write in flight at save time]}

It is evidence, not truth: the size is bounded before reading, decoding is strict, and anything
that does not match this torrent exactly means "no resume data" (a recheck), never an error. A
claimed piece is trusted only if every file it touches has the recorded size, mtime, change
time and file identity, and lies wholly within the file as it is now; pieces touching any other
file are re-hashed. The change time and the inode are what an edit cannot forge: restoring an
edited file's mtime (``touch -d``) sets its ctime to now, and a replaced file is a new inode.
(On Windows ``st_ctime`` is the creation time, which a replacement also changes; the cache's
ACL keeps users from editing in place there.) Three rules make a kill -9 at any moment lose at
most the pieces in flight (see ``FileStorage.save_resume`` for the ordering):

* data is fsynced before the resume file that claims it is renamed into place;
* a file with a piece write in flight while its state was recorded is "unsettled": never trusted;
* a file whose mtime is within ``RACY_NS`` of the save clock is "racy" (a later write in the
  same timestamp tick would not change it, as in git's racy-clean problem): never trusted.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pdist import bencode
from p2pdist.bitfield import Bitfield
from p2pdist.errors import P2pdistError
from p2pdist.metainfo import Info, Layout

FORMAT = b"p2pdist-resume/2"
RACY_NS = 50_000_000  # well above Linux's coarse timestamp tick (4-10 ms)
ROOTS = (b"part", b"final")


@dataclass(frozen=True, slots=True)  # two per held file (start-up check, last verify)
class FileState:
    """A file's size, mtime, change time and identity; ``size == -1`` when it does not exist."""

    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: int = 0

    @property
    def exists(self) -> bool:
        return self.size >= 0


MISSING = FileState(-1, 0)


@dataclass(frozen=True)
class ResumeData:
    fingerprint: bytes
    root: bytes
    pieces: Bitfield
    files: tuple[FileState, ...]
    clock_ns: int
    unsettled: frozenset[int]


def layout_fingerprint(info: Info) -> bytes:
    """A 20-byte identity of everything storage depends on (used when no info-hash is given)."""
    described = {
        b"name": info.name,
        b"piece length": info.piece_length,
        b"pieces": info.piece_hashes,
        b"files": [[list(f.path), f.length, int(f.pad)] for f in info.files],
    }
    return hashlib.sha1(bencode.encode(described)).digest()


def max_resume_bytes(info: Info) -> int:
    return 1024 + (info.num_pieces + 7) // 8 + 128 * len(info.files)


def encode_resume(data: ResumeData) -> bytes:
    return bencode.encode(
        {
            b"format": FORMAT,
            b"info": data.fingerprint,
            b"root": data.root,
            b"pieces": data.pieces.to_bytes(),
            b"clock": data.clock_ns,
            b"files": [[state.size, state.mtime_ns, state.ctime_ns, state.inode] for state in data.files],
            b"unsettled": sorted(data.unsettled),
        }
    )


def decode_resume(raw: bytes | None, info: Info, fingerprint: bytes) -> ResumeData | None:
    """The resume data if ``raw`` is well-formed and belongs to this torrent, else None."""
    if raw is None or len(raw) > max_resume_bytes(info):
        return None
    files_count = len(info.files)
    limits = bencode.Limits(
        max_depth=3,
        max_tokens=32 + 6 * files_count,
        max_string=max(64, (info.num_pieces + 7) // 8),
        max_int_digits=20,
    )
    try:
        top = bencode.decode(raw, limits)
        if not isinstance(top, dict) or set(top) != {
            b"format", b"info", b"root", b"pieces", b"clock", b"files", b"unsettled"
        }:
            return None
        if top[b"format"] != FORMAT or top[b"info"] != fingerprint or top[b"root"] not in ROOTS:
            return None
        pieces_raw, clock, files_raw, unsettled_raw = top[b"pieces"], top[b"clock"], top[b"files"], top[b"unsettled"]
        if not isinstance(pieces_raw, bytes) or not isinstance(clock, int) or clock < 0:
            return None
        pieces = Bitfield.from_bytes(pieces_raw, info.num_pieces)
        if not isinstance(files_raw, list) or len(files_raw) != files_count:
            return None
        states = []
        for item in files_raw:
            if not isinstance(item, list) or len(item) != 4:
                return None
            size, mtime, ctime, inode = item
            if not (isinstance(size, int) and isinstance(mtime, int) and isinstance(ctime, int) and isinstance(inode, int)):
                return None
            if size < -1 or mtime < 0 or ctime < 0 or inode < 0:
                return None
            states.append(FileState(size, mtime, ctime, inode))
        if not isinstance(unsettled_raw, list):
            return None
        unsettled = [v for v in unsettled_raw if isinstance(v, int) and 0 <= v < files_count]
        if len(unsettled) != len(unsettled_raw):
            return None
    except P2pdistError:
        return None
    root = top[b"root"]
    assert isinstance(root, bytes)
    return ResumeData(fingerprint, root, pieces, tuple(states), clock, frozenset(unsettled))


def data_files(info: Info) -> list[int]:
    """Indices of the files that hold bytes on disk (not pad, not empty)."""
    return [i for i, f in enumerate(info.files) if not f.pad and f.length > 0]


def unreadable_pieces(layout: Layout, states: Sequence[FileState], files: Iterable[int]) -> set[int]:
    """Pieces that touch a missing file among ``files``, or bytes past a short file's end:
    they cannot verify, and no resume data may vouch for them."""
    missing: set[int] = set()
    for index in files:
        state, entry = states[index], layout.files[index]
        if not state.exists:
            missing.update(layout.pieces_of_file(index))
        elif state.size < entry.length:
            first_short = (entry.offset + state.size) // layout.piece_length
            missing.update(range(first_short, layout.pieces_of_file(index).stop))
    return missing


def plan_start(
    info: Info, layout: Layout, resume: ResumeData | None, root: bytes, current: Sequence[FileState]
) -> tuple[set[int], set[int]]:
    """Split the torrent's pieces into (trusted from resume data, to re-hash).

    Without usable resume data every piece whose files all exist is re-hashed.
    """
    files = data_files(info)
    unreadable = unreadable_pieces(layout, current, files)
    if resume is None or resume.root != root:
        return set(), set(range(info.num_pieces)) - unreadable
    suspect: set[int] = set()
    for index in files:
        state = current[index]
        recorded = resume.files[index]
        if (
            index in resume.unsettled
            or state != recorded
            or (state.exists and resume.clock_ns - state.mtime_ns < RACY_NS)
        ):
            suspect.update(layout.pieces_of_file(index))
    suspect -= unreadable
    trusted = {i for i in resume.pieces if i not in suspect and i not in unreadable}
    return trusted, suspect


def file_state(path: Path) -> FileState:
    """Size and mtime of a regular file, MISSING if it (or a parent) does not exist."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    if not stat.S_ISREG(info.st_mode):
        return MISSING
    return FileState(info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when missing, unreadable or longer than ``limit``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None
