"""Retention policy of the package cache: which packages to remove, given the time.

Pure on purpose: packages, ``now``, limits and the set of packages in use go in, the removals
come out, so every rule is tested with tables and properties instead of clocks and disks.

The rules, in order of precedence:

1. A package in use (a live lease: a command is running from it) is never removed.
2. A package inside its seeding window (last advertisement + ``min_seed``) is never removed:
   other PCs of the branch may still be downloading it from us.
3. A package past ``keep`` after its last advertisement is removed (``keep >= min_seed``).
4. If the cache is still larger than ``max_bytes``, packages past their seeding window are
   evicted, the least recently advertised first, until it fits or none is left to evict.

Versions are independent packages here: a newer version never pushes out an older one that is
leased or still inside its window. Sizes are the packages' full sizes (what a download in
progress will occupy), so the limit holds once the downloads finish.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

EXPIRED = "seeding window over"
OVER_LIMIT = "cache size limit"


@dataclass(frozen=True)
class CachedPackage:
    key: str  # info-hash hex
    size: int
    last_advertised: float  # seconds since the epoch


@dataclass(frozen=True)
class RetentionLimits:
    min_seed: float  # seconds after the last advertisement during which it is always kept
    keep: float = 0.0  # seconds after which it is removed anyway (raised to min_seed)
    max_bytes: int = 0  # 0 = no size limit


@dataclass(frozen=True)
class Removal:
    key: str
    reason: str


def plan_cleanup(
    packages: Iterable[CachedPackage], now: float, limits: RetentionLimits, in_use: Collection[str] = ()
) -> list[Removal]:
    """The packages to remove now, expired ones first, then size evictions oldest first."""
    keep = max(limits.keep, limits.min_seed)
    removals: list[Removal] = []
    remaining: list[CachedPackage] = []
    for package in packages:
        if package.key not in in_use and now >= package.last_advertised + keep:
            removals.append(Removal(package.key, EXPIRED))
        else:
            remaining.append(package)
    if limits.max_bytes <= 0:
        return removals
    total = sum(package.size for package in remaining)
    evictable = sorted(
        (p for p in remaining if p.key not in in_use and now >= p.last_advertised + limits.min_seed),
        key=lambda p: (p.last_advertised, p.key),
    )
    for package in evictable:
        if total <= limits.max_bytes:
            break
        removals.append(Removal(package.key, OVER_LIMIT))
        total -= package.size
    return removals
