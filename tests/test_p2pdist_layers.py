"""Every module imports on its own, and lower layers never import higher ones.

The allowed edges are the layering of docs/ARCHITECTURE.md; a new edge is a design decision
and belongs in that table, not in a quiet import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.modules import PACKAGE_ROOT, module_names

BASE = {"p2pdist", "errors", "bitfield", "bencode", "config", "httpio", "aio", "logfile", "atomicfile", "outcomes", "records"}
# component -> components it may import (besides itself and BASE)
ALLOWED: dict[str, set[str]] = {
    "p2pdist": set(),
    "errors": set(),
    "bitfield": {"errors"},
    "bencode": {"errors", "records"},
    "config": {"errors"},
    "httpio": set(),
    "aio": set(),
    "logfile": {"errors"},
    "atomicfile": set(),
    "outcomes": set(),
    "records": set(),
    "localports": set(),
    "metainfo": set(),
    "creator": {"metainfo"},
    "wire": {"metainfo"},
    "piece_picker": {"metainfo"},
    "storage": {"metainfo"},
    "tracker": {"metainfo"},
    "control": set(),
    "engine": {"metainfo", "wire", "piece_picker", "storage", "tracker.announce"},
    "agent": {"metainfo", "storage", "engine", "control", "tracker.reports", "tracker.announce"},  # doctor scrapes
    "wrapper": {"metainfo", "control"},
    "winsetup": {"metainfo", "control", "agent.config"},  # install.cmd writes the agent's agent.toml
    "cli": {"*"},
    "demo": {"*"},  # the local demo drives every part, like a user would
    "__main__": {"cli"},
}


def component(module: str) -> str:
    """The top-level part of p2pdist a dotted name belongs to ("p2pdist" for the root package)."""
    parts = module.split(".")
    if len(parts) < 2:
        return "p2pdist"
    first = PACKAGE_ROOT / parts[1]
    if first.is_dir() or first.with_suffix(".py").is_file():
        return parts[1]
    return "p2pdist"  # an attribute of the root package, such as __version__


def imported_modules(path: Path) -> set[str]:
    """Every p2pdist module the file imports, relative imports resolved to absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = list(path.relative_to(PACKAGE_ROOT.parent).parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "p2pdist" or name.startswith("p2pdist.")}


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    """A relative import counts like its absolute spelling, so it cannot slip past the table."""
    module = PACKAGE_ROOT / "wrapper" / "gate.py"
    absolute = imported_modules(module)
    source = module.read_text()
    assert "from p2pdist.control.client import" in source
    assert "p2pdist.control.client" in absolute
    probe = PACKAGE_ROOT / "wrapper" / "_layer_probe.py"
    try:
        probe.write_text("from ..engine import torrent\nfrom . import gate\n")
        assert {"p2pdist.engine", "p2pdist.engine.torrent", "p2pdist.wrapper", "p2pdist.wrapper.gate"} <= imported_modules(probe)
    finally:
        probe.unlink()


def test_every_module_imports_on_its_own() -> None:
    """Each module imports in a clean p2pdist namespace (no reliance on import order).

    One child process imports them in turn, dropping every p2pdist module from sys.modules
    between imports: as strict as a process per module, at a fraction of the start-up cost.
    """
    modules = [m for m in module_names() if not m.endswith("__main__")]
    script = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'p2pdist' or m.startswith('p2pdist.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {exc!r}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", module_names())
def test_lower_layers_never_import_higher_ones(module: str) -> None:
    own = component(module)
    allowed = ALLOWED.get(own)
    assert allowed is not None, f"component {own!r} is missing from the layer table"
    path = PACKAGE_ROOT.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    for target in imported_modules(path):
        theirs = component(target)
        if theirs == own or "*" in allowed:
            continue
        if theirs in BASE and own not in BASE:
            continue
        dotted = ".".join(target.split(".")[1:3])
        assert theirs in allowed or dotted in allowed, f"{module} imports {target}: {own} may not depend on {theirs}"
