"""The syntax of an SMS PackageID (site code + 5 hex digits), alone.

The wrapper checks ``--pkg`` and folder names with it on every start; ``identity`` (the
PackageID-and-version record torrents carry) builds on it.
"""

from __future__ import annotations

import re

# \Z, not $: "$" also matches before a trailing newline, which would let "PS100012\n" through.
PACKAGE_ID_RE = re.compile(r"\A[A-Z0-9]{3}[0-9A-F]{5}\Z")


def normalize_package_id(text: str) -> str:
    """Upper-case and check a PackageID such as ``PS100012``; ValueError explains a bad one."""
    package_id = text.strip().upper()
    if not PACKAGE_ID_RE.match(package_id):
        raise ValueError(f"{text!r} is not a PackageID (3-character site code + 5 hex digits, e.g. PS100012)")
    return package_id


def looks_like_package_id(text: str) -> bool:
    return bool(PACKAGE_ID_RE.match(text.strip().upper()))
