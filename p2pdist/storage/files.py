"""Pieces in real files: staged under ``.part`` names, renamed into place when complete.

Layout on disk, below ``directory``: a multi-file torrent is written into ``<name>.part/`` and
``finish()`` renames that folder to ``<name>``; a single-file torrent is written as
``<name>.part`` and renamed to ``<name>``. One rename makes the whole package visible, so it is
either absent or complete under its final names. If the final name already exists at
``start()`` (an admin's folder being seeded, or a restart after finish) storage works in place
on it and verifies it; it never renames over it.

I/O uses positional reads and writes (``os.pwrite``/``os.preadv``) on file descriptors kept in a
small LRU (``handles``), so concurrent workers never share a file offset. Where ``os.pwrite``
is missing (Windows) each descriptor has a lock and the code seeks then writes. Files are created only
when a piece touching them is written (sparse is fine), pad files (BEP 47) are never written and
read as zeros, and every path is checked to resolve inside ``directory`` before it is opened.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from pathlib import Path

from p2pdist.atomicfile import fsync_directory, write_atomically
from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import Info
from p2pdist.storage.base import DEFAULT_CACHE_BYTES, Storage, StorageError, grown
from p2pdist.storage.handles import Handles, read_into, write_at
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
    max_resume_bytes,
    plan_start,
    read_bounded,
    unreadable_pieces,
)
from p2pdist.storage.verify import Buffer, Progress
from p2pdist.storage.workers import PieceWorkers

DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
STAGING_SUFFIX = ".part"


def storage_error(action: str, path: object, error: OSError) -> StorageError:
    """An OSError as a StorageError naming the file, with ``disk_full`` set for ENOSPC/EDQUOT."""
    reason = error.strerror or str(error)
    return StorageError(f"cannot {action} {path}: {reason}", disk_full=error.errno in DISK_FULL_ERRNOS)


class FileStorage(Storage):
    """A torrent's pieces in files below ``directory`` (see the module docstring).

    ``resume_path`` is where ``save_resume`` keeps resume data; without one, ``save_resume`` does
    nothing and every ``start`` re-hashes what exists. ``info_hash`` (optional) is stored in the
    resume data as the torrent's identity; otherwise a fingerprint of the piece hashes and file
    list is. Call ``start()`` before anything else.
    """

    __slots__ = (
        "_directory", "_resume_path", "_fingerprint", "_files", "_data_files", "_handles", "_root", "start_identity",
        "_real_directory", "_state_lock", "_dirty", "_new_dirs", "_save_lock",
    )

    def __init__(
        self,
        info: Info,
        directory: Path,
        *,
        resume_path: Path | None = None,
        executor: Executor | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        info_hash: bytes | None = None,
        max_open_files: int = 64,
        piece_workers: PieceWorkers | None = None,
    ) -> None:
        super().__init__(info, executor=executor, cache_bytes=cache_bytes, piece_workers=piece_workers)
        # Kept as text, made into paths when used: a Path holds a list of every component of
        # it besides, several hundred bytes for each of a thousand held packages.
        self._directory = os.fspath(directory)
        self._resume_path = os.fspath(resume_path) if resume_path is not None else None
        self._fingerprint = info_hash if info_hash is not None else layout_fingerprint(info)
        self._files = info.files
        self._data_files = data_files(info)
        self._handles = Handles(max_open_files, self._open_fd)
        self._root: bytes | None = None  # b"part" or b"final" once started
        # The file states the start-up check judged (resume data or hashing): what a caller that
        # pins the files after the start compares them with (agent: leases held again).
        self.start_identity: tuple[FileState, ...] | None = None
        self._real_directory: str | None = None
        self._state_lock = threading.Lock()
        # Files written since their last fsync, folders whose entries changed since the last
        # sync: sets only while there are some (a complete package has none, for months).
        self._dirty: set[int] | None = None
        self._new_dirs: set[Path] | None = None
        self._save_lock: asyncio.Lock | None = None

    # ----------------------------------------------------------------- paths

    @property
    def directory(self) -> Path:
        return Path(self._directory)

    @property
    def resume_path(self) -> Path | None:
        """Where ``save_resume`` keeps resume data (None: it keeps none)."""
        return Path(self._resume_path) if self._resume_path is not None else None

    @property
    def final_root(self) -> Path:
        return self.directory / self.info.name

    @property
    def staging_root(self) -> Path:
        return self.directory / (self.info.name + STAGING_SUFFIX)

    @property
    def staged(self) -> bool:
        """True while data lives under the ``.part`` name."""
        return self._root == b"part"

    def file_path(self, file_index: int) -> Path:
        """Where file ``file_index`` lives now (staging or final name)."""
        parts = self._files[file_index].path
        top = self.info.name + STAGING_SUFFIX if self._root == b"part" else parts[0]
        return self.directory.joinpath(top, *parts[1:])

    def _check_inside(self, path: Path) -> None:
        if self._real_directory is None:
            self._real_directory = os.path.realpath(self.directory)
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._real_directory]) != self._real_directory or real == self._real_directory:
            raise StorageError(f"{path} resolves to {real}, outside {self.directory}")

    def _open_fd(self, file_index: int, write: bool) -> int:
        """Open a file for the descriptor cache (runs under its lock, in a worker)."""
        path = self.file_path(file_index)
        if write:
            self._make_parents(path.parent)
        self._check_inside(path)
        flags = (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY) | _O_BINARY | _O_CLOEXEC
        fd = os.open(path, flags, 0o666)
        if write:
            with self._state_lock:
                self._mark_new_dirs([path.parent])
        return fd

    def _make_parents(self, folder: Path) -> None:
        created = []
        probe = folder
        while not probe.is_dir() and probe != probe.parent:
            created.append(probe)
            probe = probe.parent
        if created:
            folder.mkdir(parents=True, exist_ok=True)
            with self._state_lock:
                self._mark_new_dirs(p.parent for p in created)

    # ----------------------------------------------------------------- readiness

    def _check_ready(self) -> None:
        self._check_open()
        if self._root is None:
            raise StorageError(f"storage of {self.info.name!r}: call start() first")

    # ----------------------------------------------------------------- start

    def _plan(self) -> tuple[set[int], set[int]]:
        """Pick the root, stat every file, read and check resume data (one worker call).

        Returns (pieces trusted from resume data, pieces to re-hash).
        """
        try:
            if self.directory.exists() and not self.directory.is_dir():
                raise StorageError(f"{self.directory} is not a folder")
            final = self.final_root
            root = b"final" if os.path.lexists(final) else b"part"
            top = final if root == b"final" else self.staging_root
            if os.path.lexists(top):
                if self.info.multi_file and not top.is_dir():
                    raise StorageError(f"{top} exists and is not a folder, but the torrent has several files")
                if not self.info.multi_file and not top.is_file():
                    raise StorageError(f"{top} exists and is not a regular file")
        except OSError as error:
            raise storage_error("inspect", self.directory, error) from error
        self._root = root
        states = self._stat_files()
        self.start_identity = tuple(states)
        raw = None
        if self.resume_path is not None:
            raw = read_bounded(self.resume_path, max_resume_bytes(self.info))
        resume = decode_resume(raw, self.info, self._fingerprint)
        return plan_start(self.info, self.layout, resume, root, states)

    def _stat_files(self) -> list[FileState]:
        states = [MISSING] * len(self._files)
        for index in self._data_files:
            path = self.file_path(index)
            try:
                states[index] = file_state(path)
            except OSError as error:
                raise storage_error("inspect", path, error) from error
        return states

    async def start(self, progress: Progress | None = None) -> Bitfield:
        """Choose staging or final names, trust matching resume data, re-hash the rest.

        ``progress(done, total)`` reports the re-hashing (not called when nothing needs it).
        """
        self._check_open()
        trusted, suspect = await self._run(self._plan)
        good = await self._verify(suspect, progress)
        self._replace_have(trusted | good, range(self.info.num_pieces))
        return self.have

    async def _recheck_candidates(self) -> set[int]:
        # A recheck reads the files now at their paths, not through descriptors opened before:
        # a file replaced since (a new inode) must be the one hashed.
        self._handles.retire_all()
        states = await self._run(self._stat_files)
        return set(range(self.info.num_pieces)) - unreadable_pieces(self.layout, states, self._data_files)

    async def file_identity(self) -> tuple[FileState, ...]:
        """Size, mtime, change time and inode of every data file, by path."""
        self._check_ready()
        return tuple(await self._run(self._stat_files))

    def data_paths(self) -> list[Path]:
        """Where every data file lives now (no pad files)."""
        return [self.file_path(index) for index in self._data_files]

    def file_identity_now(self) -> tuple[FileState, ...]:
        """``file_identity`` at once, in the caller's thread (a few stat calls)."""
        self._check_ready()
        return tuple(self._stat_files())

    def close_descriptors(self) -> None:
        """Close the open descriptors (those in use once released); the next read opens by path.

        Before the files are pinned for a run (agent.pins): a descriptor this storage still holds
        open for writing would make Windows refuse the pin's deny-write share mode.
        """
        self._handles.retire_all()

    # ----------------------------------------------------------------- worker hooks

    def _store(self, index: int, data: memoryview) -> None:
        position = 0
        for span in self.layout.piece_spans(index):
            if not self._files[span.file_index].pad:
                self._write(span.file_index, data[position : position + span.length], span.file_offset)
            position += span.length

    def _write(self, file_index: int, data: memoryview, offset: int) -> None:
        try:
            handle = self._handles.acquire(file_index, True)
        except OSError as error:
            raise storage_error("open", self.file_path(file_index), error) from error
        try:
            write_at(handle.fd, data, offset, handle.lock)
        except OSError as error:
            raise storage_error("write", self.file_path(file_index), error) from error
        finally:
            self._handles.release(handle)
        # Marked only once written, so a save that syncs and clears it meanwhile cannot miss it.
        with self._state_lock:
            self._mark_dirty([file_index])

    def _read(self, offset: int, length: int) -> bytearray | None:
        """Torrent bytes ``[offset, offset+length)``; None if a file is missing or short."""
        buffer = bytearray(length)
        view = memoryview(buffer)
        position = 0
        for span in self.layout.spans(offset, length):
            if not self._files[span.file_index].pad:
                try:
                    handle = self._handles.acquire(span.file_index, False)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    return None
                except OSError as error:
                    raise storage_error("open", self.file_path(span.file_index), error) from error
                try:
                    got = read_into(handle.fd, view[position : position + span.length], span.file_offset, handle.lock)
                except OSError as error:
                    if error.errno == errno.EIO:
                        return None
                    raise storage_error("read", self.file_path(span.file_index), error) from error
                finally:
                    self._handles.release(handle)
                if got < span.length:
                    return None
            position += span.length
        return buffer

    def _load(self, index: int, begin: int, length: int) -> bytes:
        data = self._read(self.layout.piece_offset(index) + begin, length)
        if data is None:
            raise StorageError(f"data of verified piece {index} of {self.info.name!r} is missing on disk")
        return bytes(data)

    def _read_candidate(self, index: int) -> Buffer | None:
        return self._read(self.layout.piece_offset(index), self.layout.piece_size(index))

    def _read_run(self, first: int, count: int) -> Sequence[Buffer | None]:
        """One large read for a run of pieces; piece by piece only if part of it is missing."""
        start = self.layout.piece_offset(first)
        end = self.layout.piece_offset(first + count - 1) + self.layout.piece_size(first + count - 1)
        whole = self._read(start, end - start)
        if whole is None:
            return [self._read_candidate(first + offset) for offset in range(count)]
        view = memoryview(whole)
        length = self.info.piece_length
        return [view[offset * length : offset * length + self.layout.piece_size(first + offset)] for offset in range(count)]

    # ----------------------------------------------------------------- durability

    def _mark_dirty(self, files: Iterable[int]) -> None:
        """Under ``_state_lock``: ``files`` were written (or created) since their last fsync."""
        self._dirty = grown(self._dirty, files)

    def _mark_new_dirs(self, folders: Iterable[Path]) -> None:
        """Under ``_state_lock``: entries of ``folders`` changed since their last fsync."""
        self._new_dirs = grown(self._new_dirs, folders)

    def _sync_dirty(self, files: Sequence[int] | None = None) -> None:
        """fsync files written since their last sync (or ``files``) and changed folders."""
        with self._state_lock:
            dirty = self._dirty or set()
            targets = set(dirty) if files is None else set(files)
            self._dirty = (dirty - targets) or None
            folders, self._new_dirs = self._new_dirs or set(), None
        current: Path = self.directory
        try:
            for index in sorted(targets):
                current = self.file_path(index)
                handle = self._handles.acquire(index, True)
                try:
                    os.fsync(handle.fd)
                finally:
                    self._handles.release(handle)
            for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
                current = folder
                if folder.is_dir():
                    fsync_directory(folder)
        except (OSError, StorageError) as error:
            with self._state_lock:
                self._mark_dirty(targets)
                self._mark_new_dirs(folders)
            if isinstance(error, StorageError):
                raise
            raise storage_error("sync", current, error) from error

    def _snapshot_files(self) -> tuple[int, list[FileState], frozenset[int]]:
        """The save clock, then every file's state, then which files have writes in flight.

        Order matters: a piece absent from the pending set read *after* the stats either had
        its bit set before the snapshot of ``have`` that follows, or started writing after
        its file was stat-ed (so its mtime moves, or the file is racy).
        """
        clock = time.time_ns()
        states = self._stat_files()
        unsettled: set[int] = set()
        for piece in self._pending_snapshot():
            unsettled.update(span.file_index for span in self.layout.piece_spans(piece))
        return clock, states, frozenset(unsettled)

    def _write_resume(self, data: ResumeData) -> None:
        self._sync_dirty()
        assert self.resume_path is not None
        try:
            write_atomically(self.resume_path, encode_resume(data))
        except OSError as error:
            raise storage_error("write resume data", self.resume_path, error) from error

    def _racy(self, clock: int, states: Sequence[FileState], unsettled: frozenset[int]) -> bool:
        return any(
            states[i].exists and i not in unsettled and clock - states[i].mtime_ns < RACY_NS for i in self._data_files
        )

    async def save_resume(self) -> None:
        """Record the verified pieces: stat files, snapshot ``have``, fsync data, write atomically.

        If a file was modified within the racy window it waits that window out once and
        stat-s again, so a clean shutdown right after the last write still resumes without
        a recheck. Without ``resume_path`` this only syncs data.
        """
        self._check_ready()
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        async with self._save_lock:
            if self.resume_path is None:
                await self._run(self._sync_dirty)
                return
            clock, states, unsettled = await self._run(self._snapshot_files)
            if self._racy(clock, states, unsettled):
                await asyncio.sleep(RACY_NS / 1e9)
                clock, states, unsettled = await self._run(self._snapshot_files)
            data = ResumeData(self._fingerprint, self._root or b"part", self.have.copy(), tuple(states), clock, unsettled)
            await self._run(self._write_resume, data)

    # ----------------------------------------------------------------- completion

    def _finish_files(self) -> None:
        """Every file at its exact size and synced; then the one rename to the final name."""
        staged = self._root == b"part"
        for index, entry in enumerate(self._files):
            if entry.pad:
                continue
            path = self.file_path(index)
            try:
                if entry.length == 0:
                    if os.path.lexists(path):
                        continue
                    handle = self._handles.acquire(index, True)
                    self._handles.release(handle)
                    with self._state_lock:
                        self._mark_dirty([index])
                elif staged and os.path.getsize(path) > entry.length:
                    handle = self._handles.acquire(index, True)
                    try:
                        os.ftruncate(handle.fd, entry.length)
                    finally:
                        self._handles.release(handle)
                    with self._state_lock:
                        self._mark_dirty([index])
            except OSError as error:
                raise storage_error("complete", path, error) from error
        self._check_lengths()
        self._sync_dirty(self._data_files if staged else None)
        self._sync_dirty()
        if not staged:
            return
        final, staging = self.final_root, self.staging_root
        with self._handles.exclusive():
            if os.path.lexists(final):
                raise StorageError(f"{final} already exists; not replacing it with {staging}")
            try:
                os.rename(staging, final)
                fsync_directory(self.directory)
            except OSError as error:
                raise storage_error("rename to final name", staging, error) from error
            self._root = b"final"

    def _check_lengths(self) -> None:
        """Every file at exactly its torrent length, or no completion: verified pieces cover
        every byte, so a file of another length means a piece was trusted that should not be
        (or the folder was edited), and the package must not become visible as complete."""
        for index, entry in enumerate(self._files):
            if entry.pad:
                continue
            path = self.file_path(index)
            try:
                size = os.stat(path).st_size
            except OSError as error:
                raise storage_error("complete", path, error) from error
            if size != entry.length:
                raise StorageError(f"cannot complete {self.info.name!r}: {path} has {size} bytes, the torrent says {entry.length}")

    async def finish(self) -> None:
        """All pieces verified: fsync, then rename ``.part`` to the final name; idempotent."""
        self._check_ready()
        self._require_complete()
        if self._save_lock is None:
            self._save_lock = asyncio.Lock()
        async with self._save_lock:
            await self._run(self._finish_files)
        # Complete, it is read only when a peer asks: an agent seeding a thousand packages
        # holds no descriptor for those nobody wants (the next read opens by path).
        self._handles.retire_all()
        if self.resume_path is not None:
            await self.save_resume()

    async def close(self) -> None:
        """Close every descriptor (those in use close when their worker is done)."""
        await super().close()
        self._handles.close()
