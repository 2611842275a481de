"""Replacing a file so that readers, crashes and power cuts see the old file or the new one.

The one writer of every file that must never be seen half-written: the agent's torrents and
token, resume data, created torrents and manifests, the repository's stored torrents.
temp file in the same folder -> fsync -> rename -> fsync of the folder (POSIX; Windows cannot
open a folder, and its rename is already journaled by NTFS).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# What tempfile.mkstemp opens with, without importing tempfile (and random) at every start of
# the commands that write one file, such as ``p2pdist create``.
_TEMP_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL
for _flag in ("O_NOFOLLOW", "O_CLOEXEC", "O_NOINHERIT", "O_BINARY"):
    _TEMP_FLAGS |= getattr(os, _flag, 0)
_TEMP_TRIES = 100


def fsync_directory(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the data itself is already synced
    finally:
        os.close(fd)


def _new_temp(path: Path) -> tuple[int, str]:
    """A new file of mode 0600 beside ``path``, opened exclusively, and its name."""
    for _ in range(_TEMP_TRIES):
        temp = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(temp, _TEMP_FLAGS, 0o600), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path} after {_TEMP_TRIES} tries")


def write_atomically(path: Path, data: bytes, mode: int = 0o644, *, secure: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder: old or new, never half.

    ``secure(temp)`` runs on the still-empty temporary file (e.g. to set a Windows ACL), so a
    secret is never readable by anyone else, not even for a moment. Raises OSError; callers
    turn it into their own one-line error. The folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = _new_temp(path)
    try:
        if secure is not None:
            secure(Path(temp))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    fsync_directory(path.parent)
