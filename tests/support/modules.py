"""The product's modules by dotted name, for tests that walk every one of them."""

from __future__ import annotations

from pathlib import Path

import p2pdist

PACKAGE_ROOT = Path(p2pdist.__file__).parent


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names
