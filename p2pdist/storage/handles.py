"""Positional file I/O and the descriptor cache that file storage reads and writes through.

Positional reads and writes (``os.pwrite``/``os.preadv``) need no shared file offset, so the
storage's workers use one descriptor at once without locking; where ``os.pwrite`` is missing
(Windows) each descriptor has a lock and the code seeks then reads or writes. Descriptors stay
open in a small LRU (``Handles``): a package being downloaded or seeded touches the same few
files again and again, and an open per block would cost more than the block's copy.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from p2pdist.storage.base import StorageError

HAS_PWRITE = hasattr(os, "pwrite") and hasattr(os, "pread")


# --------------------------------------------------------------------------- positional I/O


def write_at(fd: int, data: memoryview, offset: int, lock: threading.Lock, *, positional: bool = HAS_PWRITE) -> None:
    """Write all of ``data`` at ``offset``; without pwrite, seek+write under ``lock``."""
    if positional:
        while data:
            written = os.pwrite(fd, data, offset)
            if written <= 0:
                raise OSError(errno.EIO, "write made no progress")
            data = data[written:]
            offset += written
        return
    with lock:
        os.lseek(fd, offset, os.SEEK_SET)
        while data:
            written = os.write(fd, data)
            if written <= 0:
                raise OSError(errno.EIO, "write made no progress")
            data = data[written:]


def read_into(fd: int, view: memoryview, offset: int, lock: threading.Lock, *, positional: bool = HAS_PWRITE) -> int:
    """Fill ``view`` from ``offset``; returns the bytes read (fewer only at end of file)."""
    total = 0
    wanted = len(view)
    if positional and hasattr(os, "preadv"):
        while total < wanted:
            got = os.preadv(fd, [view[total:]], offset + total)
            if got == 0:
                break
            total += got
        return total
    if positional:
        while total < wanted:
            chunk = os.pread(fd, wanted - total, offset + total)
            if not chunk:
                break
            view[total : total + len(chunk)] = chunk
            total += len(chunk)
        return total
    with lock:
        os.lseek(fd, offset, os.SEEK_SET)
        while total < wanted:
            chunk = os.read(fd, wanted - total)
            if not chunk:
                break
            view[total : total + len(chunk)] = chunk
            total += len(chunk)
    return total


# --------------------------------------------------------------------------- descriptor cache


class Handle:
    __slots__ = ("fd", "writable", "users", "retired", "lock")

    def __init__(self, fd: int, writable: bool) -> None:
        self.fd = fd
        self.writable = writable
        self.users = 0
        self.retired = False
        self.lock = threading.Lock()


class Handles:
    """Open descriptors by file index, LRU-bounded; one in use is never closed under its user.

    A descriptor is retired (closed once its last user releases it) when evicted, when a write
    needs a writable one in place of a read-only one, and around the final rename.
    """

    __slots__ = ("_limit", "_opener", "_lock", "_open", "_closed")

    def __init__(self, limit: int, opener: Callable[[int, bool], int]) -> None:
        self._limit = max(1, limit)
        self._opener = opener
        self._lock = threading.Lock()
        # Least recently used first (a plain dict keeps insertion order, and unlike an OrderedDict
        # gives its table back once emptied: a complete package holds no descriptor).
        self._open: dict[int, Handle] = {}
        self._closed = False

    def acquire(self, key: int, write: bool) -> Handle:
        with self._lock:
            if self._closed:
                raise StorageError("storage is closed")
            handle = self._open.get(key)
            if handle is not None and (handle.writable or not write):
                self._open[key] = self._open.pop(key)  # now the most recently used
                handle.users += 1
                return handle
            fd = self._opener(key, write)
            if handle is not None:
                self._retire(self._open.pop(key))
            handle = Handle(fd, write)
            handle.users = 1
            self._open[key] = handle
            self._trim()
            return handle

    def release(self, handle: Handle) -> None:
        with self._lock:
            handle.users -= 1
            if handle.retired:
                if handle.users == 0:
                    os.close(handle.fd)
            elif len(self._open) > self._limit:
                self._trim()

    def _retire(self, handle: Handle) -> None:
        handle.retired = True
        if handle.users == 0:
            os.close(handle.fd)

    def _trim(self) -> None:
        if len(self._open) <= self._limit:
            return
        for key in [k for k, h in self._open.items() if h.users == 0]:
            self._retire(self._open.pop(key))
            if len(self._open) <= self._limit:
                return

    def _retire_open(self) -> None:
        """Under the lock: retire every open descriptor and drop the emptied table."""
        for handle in self._open.values():
            self._retire(handle)
        self._open = {}

    def retire_all(self) -> None:
        """Close every descriptor (those in use once released): the next read opens by path."""
        with self._lock:
            self._retire_open()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Retire every descriptor and hold off new opens (for the final rename)."""
        with self._lock:
            self._retire_open()
            yield

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._retire_open()

    def __len__(self) -> int:
        return len(self._open)


# --------------------------------------------------------------------------- the storage
