"""Installers for the wrapper tests: a real executable script that records how it was run."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

INSTALLER = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["INSTALLER_RECORD"], "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
sys.exit(int(os.environ.get("INSTALLER_EXIT", "0")))
"""


def make_executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
