"""What goes into a torrent: a file or a package folder turned into an ordered list of files.

The order is the sort order of the path components, never the order the disk lists them in,
so the same content gives the same info-hash on any machine. Names are checked with the same
rules the metainfo parser applies to torrents from elsewhere (``p2pdist.metainfo.paths``): a
package that an agent would refuse to download is refused here, with the offending file named.
Symlinks are followed only while they stay inside the folder; FIFOs, sockets and devices are
left out with a note.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from p2pdist.errors import InputError, MetainfoError
from p2pdist.metainfo.paths import check_component, check_no_collisions, check_path
from p2pdist.records import Record


class SourceFile(Record):
    """One file on disk and where it sits in the torrent.

    ``torrent_path`` matches ``FileEntry.path``: the name alone for a single-file torrent,
    the torrent's name followed by the path inside the folder for a multi-file one.
    """

    torrent_path: tuple[str, ...]
    disk_path: Path
    size: int
    mtime_ns: int

    @property
    def relpath(self) -> str:
        """The path inside the package folder (the file name for a single-file torrent)."""
        parts = self.torrent_path[1:] or self.torrent_path
        return "/".join(parts)


class Source(Record):
    """A scanned file or folder, ready to hash."""

    name: str
    root: Path
    multi_file: bool
    files: tuple[SourceFile, ...]
    notes: tuple[str, ...] = ()

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def fingerprint(self) -> list[list[object]]:
        """Path, size and mtime of every file: what a re-run compares to spot a change."""
        return [[f.relpath, f.size, f.mtime_ns] for f in self.files]


class Excludes:
    """``--exclude`` globs, matched without regard to case (package files come from Windows).

    A pattern without ``/`` matches a file or folder name at any depth (``*.tmp``,
    ``Thumbs.db``, ``.git``); a pattern with ``/`` matches the whole path inside the package
    folder (``logs/*.txt``). An excluded folder is not entered.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._names = [p.casefold() for p in self.patterns if "/" not in p]
        self._paths = [p.strip("/").casefold() for p in self.patterns if "/" in p]

    def match(self, relpath: str) -> bool:
        folded = relpath.casefold()
        name = folded.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatchcase(name, p) for p in self._names):
            return True
        return any(fnmatch.fnmatchcase(folded, p) for p in self._paths)


def _decoded(name: str, where: str) -> str:
    """Refuse names that are not valid UTF-8 on disk (Python keeps them as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where}: file name {name!r} is not valid UTF-8") from None
    return name


def _check_name(parts: tuple[str, ...], where: str) -> None:
    try:
        check_path(parts, where)
    except MetainfoError as exc:
        raise InputError(f"{exc} (rename it or --exclude it)") from None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _check_readable(path: Path) -> None:
    """Open each file once up front so a permission problem fails before minutes of hashing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    os.close(fd)


def scan_path(path: Path | str, excludes: Sequence[str] = ()) -> Source:
    """Scan a file (single-file torrent) or a folder (multi-file torrent named after it)."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    name = _decoded(Path(os.path.abspath(path)).name, str(path))
    try:
        check_component(name, "torrent name")
    except MetainfoError as exc:
        raise InputError(f"{path}: {exc}") from None
    if stat.S_ISREG(info.st_mode):
        if Excludes(excludes).match(name):
            raise InputError(f"{path}: the only file is excluded; nothing to share")
        if info.st_size == 0:
            raise InputError(f"{path} is empty; a torrent needs at least one byte")
        _check_readable(path)
        entry = SourceFile((name,), path, info.st_size, info.st_mtime_ns)
        return Source(name, path, False, (entry,))
    if not stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path} is neither a regular file nor a folder")
    return _scan_folder(path, name, Excludes(excludes))


def _scan_folder(root: Path, name: str, excludes: Excludes) -> Source:
    real_root = os.path.realpath(root)
    notes: list[str] = []
    found: list[SourceFile] = []
    # Each pending folder carries the real paths of its ancestors, so a symlink that points
    # back up the chain is seen as a loop however many links it takes.
    pending: list[tuple[Path, tuple[str, ...], frozenset[str]]] = [(root, (), frozenset({real_root}))]
    while pending:
        folder, rel, chain = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"cannot list {folder}: {exc.strerror}") from None
        for entry in entries:
            parts = (*rel, _decoded(entry.name, str(folder)))
            relpath = "/".join(parts)
            if excludes.match(relpath):
                continue
            disk = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError as exc:
                raise InputError(f"cannot read {disk}: {exc.strerror}") from None
            real = ""
            if is_link or is_dir:
                # Folders too: a Windows junction is no symlink to scandir but may lead anywhere.
                real = os.path.realpath(disk)
                if is_link and not os.path.exists(real):
                    notes.append(f"skipped {relpath}: broken symlink")
                    continue
                if not _within(real, real_root):
                    notes.append(f"skipped {relpath}: {'symlink' if is_link else 'link'} leaves the folder")
                    continue
                if is_dir and real in chain:
                    notes.append(f"skipped {relpath}: symlink loop")
                    continue
            if is_dir:
                pending.append((disk, parts, chain | {real}))
            elif is_file:
                _check_name(parts, f"file {relpath!r} cannot go into a torrent")
                info = _stat(disk)
                found.append(SourceFile((name, *parts), disk, info.st_size, info.st_mtime_ns))
            else:
                notes.append(f"skipped {relpath}: not a regular file")
    found.sort(key=lambda f: f.torrent_path)
    try:
        check_no_collisions(f.torrent_path for f in found)
    except MetainfoError as exc:
        raise InputError(f"cannot put these files in one torrent: {exc}") from None
    if not any(f.size for f in found):
        raise InputError(f"{root}: nothing to share (no files with data after excludes)")
    for item in found:
        _check_readable(item.disk_path)
    return Source(name, root, True, tuple(found), tuple(notes))
