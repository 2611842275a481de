"""The one log-file policy of the long-running programs (agent, site server).

A service runs for months: its log rotates at 10 MiB and keeps three old files, so it never
fills the disk and the last days are always there to read. A folder that cannot be written is
one clear line at start, not a traceback later.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from p2pdist.errors import OutputError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ROTATE_BYTES = 10 << 20
KEEP_FILES = 3


def rotating_file_handler(path: Path) -> logging.Handler:
    """A UTF-8 handler writing ``path`` (its folder created), rotated by size."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=ROTATE_BYTES, backupCount=KEEP_FILES, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write log file {path}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler
