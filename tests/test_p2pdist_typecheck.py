"""The type checker passes on the product (rules in pyproject.toml: a lenient base for the
package, strict on the sans-IO core and the engine), and every ignore in the product says why."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# "# type: ignore[code]  # reason": the error silenced, and why it is right to silence it.
_EXPLAINED = re.compile(r"# type: ignore\[[a-z0-9-]+(, ?[a-z0-9-]+)*\]  # \S")


def test_mypy_finds_nothing() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the test extras: pip install -e .[test])")
    # The incremental cache (.mypy_cache/ in the checkout) makes a run after a small change
    # take a second or two; a cold run checks everything, the standard library stubs included.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignore_says_why() -> None:
    files = sorted((ROOT / "p2pdist").rglob("*.py"))
    assert len(files) > 100, files
    bare = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "type: ignore" in line and not _EXPLAINED.search(line)
    ]
    assert not bare, "ignores without '[code]  # reason':\n" + "\n".join(bare)
