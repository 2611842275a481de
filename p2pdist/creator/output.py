"""Writing output files so that a reader, a crash or Ctrl-C never sees half of one.

Data goes to a temporary file in the target's own folder (same file system, so the rename is
atomic), is flushed to disk, and only then renamed over the target. Any failure or interrupt
removes the temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2pdist.atomicfile import write_atomically
from p2pdist.errors import OutputError

NEW_FILE_MODE = 0o644


def check_writable(path: Path, *, overwrite: bool) -> None:
    """Fail before any long work if ``path`` cannot be written (or exists and must not be)."""
    folder = path.parent
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists (use --force to replace it)")
    if path.is_dir():
        raise OutputError(f"{path} is a folder")
    if not folder.is_dir():
        raise OutputError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to folder {folder}: permission denied")


def write_atomic(path: Path, data: bytes, *, mode: int = NEW_FILE_MODE) -> None:
    """Write ``data`` to ``path``, old or new and never half; one clear line if it cannot."""
    try:
        write_atomically(Path(path), data, mode)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
