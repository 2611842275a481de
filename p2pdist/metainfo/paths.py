"""File-name rules that keep every torrent inside its package folder, on Windows and POSIX.

A name from a torrent becomes a path on an SCCM client, so the rules are Windows' (the stricter
of the two): no separators, drive letters or stream names (any ``:``), no ``.``/``..``, no control
characters, none of ``<>"|?*``, no reserved device names (``CON``, ``NUL``, ``COM1``... with any
extension), no trailing dot or space, and no two paths that differ only in case.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2pdist.errors import MetainfoError

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_PATH_DEPTH = 32

# C0 controls, DEL and the C1 controls (U+0080..U+009F): Windows forbids only C0, but no package
# needs the others and they make names that print differently from what is on disk.
_CONTROL_CHARS = frozenset(chr(c) for c in [*range(32), *range(0x7F, 0xA0)])
_FORBIDDEN_CHARS = frozenset('<>:"/\\|?*') | _CONTROL_CHARS
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"COM{i}" for i in "123456789¹²³"]
    + [f"LPT{i}" for i in "123456789¹²³"]
)


def check_component(name: str, where: str) -> None:
    """Raise MetainfoError with the exact reason when ``name`` is not a safe file name."""
    if not name:
        raise MetainfoError(f"{where}: empty path component")
    if name in (".", ".."):
        raise MetainfoError(f"{where}: path component {name!r} is not allowed")
    if len(name.encode()) > MAX_COMPONENT_BYTES:
        raise MetainfoError(f"{where}: path component longer than {MAX_COMPONENT_BYTES} bytes")
    bad = next((ch for ch in name if ch in _FORBIDDEN_CHARS), None)
    if bad is not None:
        if bad in "/\\":
            what = "a path separator"
        elif bad == ":":
            what = "':' (drive letter or stream name)"
        elif bad in _CONTROL_CHARS:
            what = "a control character" if bad != "\x00" else "a NUL character"
        else:
            what = f"{bad!r}, not allowed in Windows file names"
        raise MetainfoError(f"{where}: path component {name!r} contains {what}")
    if name[-1] in ". ":
        raise MetainfoError(f"{where}: path component {name!r} ends with a dot or space")
    stem = name.split(".", 1)[0].rstrip(" ").upper()
    if stem in _RESERVED:
        raise MetainfoError(f"{where}: {name!r} is a reserved device name on Windows")


def check_path(parts: tuple[str, ...], where: str) -> None:
    if not parts:
        raise MetainfoError(f"{where}: empty path")
    if len(parts) > MAX_PATH_DEPTH:
        raise MetainfoError(f"{where}: path deeper than {MAX_PATH_DEPTH} folders")
    for part in parts:
        check_component(part, where)
    if len("/".join(parts).encode()) > MAX_PATH_BYTES:
        raise MetainfoError(f"{where}: path longer than {MAX_PATH_BYTES} bytes")


def check_no_collisions(paths: Iterable[tuple[str, ...]]) -> None:
    """No two files may map to one name on a case-insensitive disk, nor a file to a folder."""
    files: dict[tuple[str, ...], tuple[str, ...]] = {}
    folders: dict[tuple[str, ...], tuple[str, ...]] = {}
    for path in paths:
        key = tuple(part.casefold() for part in path)
        if key in files:
            raise MetainfoError(f"files {'/'.join(files[key])!r} and {'/'.join(path)!r} collide (names differ only in case)")
        if key in folders:
            raise MetainfoError(f"file {'/'.join(path)!r} has the name of a folder of {'/'.join(folders[key])!r}")
        files[key] = path
        for depth in range(1, len(key)):
            prefix = key[:depth]
            if prefix in files:
                raise MetainfoError(f"file {'/'.join(files[prefix])!r} has the name of a folder of {'/'.join(path)!r}")
            folders.setdefault(prefix, path)
