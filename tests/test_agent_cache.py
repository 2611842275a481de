"""The retention policy: tables for the rules, properties for the promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.agent.cache import EXPIRED, OVER_LIMIT, CachedPackage, Removal, RetentionLimits, plan_cleanup

DAY = 86400.0
NOW = 1_000 * DAY


def pkg(key: str, size: int, days_ago: float) -> CachedPackage:
    return CachedPackage(key, size, NOW - days_ago * DAY)


# (packages, limits, in use, expected removals in order)
CASES = [
    pytest.param([pkg("a", 10, 1)], RetentionLimits(3 * DAY), set(), [], id="inside window"),
    pytest.param([pkg("a", 10, 3)], RetentionLimits(3 * DAY), set(), [Removal("a", EXPIRED)], id="window just over"),
    pytest.param([pkg("a", 10, 2.99)], RetentionLimits(3 * DAY), set(), [], id="window almost over"),
    pytest.param([pkg("a", 10, 9)], RetentionLimits(3 * DAY), {"a"}, [], id="leased is never removed"),
    pytest.param(
        [pkg("a", 10, 5), pkg("b", 10, 4)], RetentionLimits(3 * DAY, keep=7 * DAY), set(), [], id="kept past window without size limit"
    ),
    pytest.param(
        [pkg("a", 10, 8), pkg("b", 10, 4)],
        RetentionLimits(3 * DAY, keep=7 * DAY),
        set(),
        [Removal("a", EXPIRED)],
        id="keep period over",
    ),
    pytest.param(
        [pkg("new", 50, 1), pkg("old", 30, 6), pkg("older", 30, 5)],
        RetentionLimits(3 * DAY, keep=30 * DAY, max_bytes=80),
        set(),
        [Removal("old", OVER_LIMIT)],
        id="size limit evicts the oldest first and stops when it fits",
    ),
    pytest.param(
        [pkg("new", 50, 1), pkg("old", 30, 6), pkg("older", 30, 5)],
        RetentionLimits(3 * DAY, keep=30 * DAY, max_bytes=40),
        set(),
        [Removal("old", OVER_LIMIT), Removal("older", OVER_LIMIT)],
        id="over the limit even after every evictable one",
    ),
    pytest.param(
        [pkg("new", 50, 1), pkg("old", 30, 6), pkg("older", 30, 5)],
        RetentionLimits(3 * DAY, keep=30 * DAY, max_bytes=80),
        {"old"},
        [Removal("older", OVER_LIMIT)],
        id="size limit skips leased",
    ),
    pytest.param(
        [pkg("a", 50, 1), pkg("b", 50, 2)],
        RetentionLimits(3 * DAY, keep=30 * DAY, max_bytes=10),
        set(),
        [],
        id="size limit never cuts into the seeding window",
    ),
    pytest.param(
        [pkg("gone", 100, 40), pkg("x", 30, 10), pkg("y", 30, 1)],
        RetentionLimits(3 * DAY, keep=30 * DAY, max_bytes=60),
        set(),
        [Removal("gone", EXPIRED)],
        id="expired ones count first, then the limit is met",
    ),
    pytest.param(
        [pkg("b", 30, 5), pkg("a", 30, 5), pkg("c", 30, 1)],
        RetentionLimits(3 * DAY, keep=30 * DAY, max_bytes=60),
        set(),
        [Removal("a", OVER_LIMIT)],
        id="ties broken by key",
    ),
    pytest.param([], RetentionLimits(3 * DAY, max_bytes=1), set(), [], id="empty cache"),
]


@pytest.mark.parametrize(("packages", "limits", "in_use", "expected"), CASES)
def test_retention_table(packages, limits, in_use, expected) -> None:  # type: ignore[no-untyped-def]
    assert plan_cleanup(packages, NOW, limits, in_use) == expected


packages_strategy = st.lists(
    st.builds(
        CachedPackage,
        key=st.text("abcdef0123", min_size=1, max_size=6),
        size=st.integers(0, 1000),
        last_advertised=st.floats(NOW - 40 * DAY, NOW + DAY, allow_nan=False),
    ),
    max_size=12,
    unique_by=lambda p: p.key,
)
limits_strategy = st.builds(
    RetentionLimits,
    min_seed=st.floats(0, 10 * DAY),
    keep=st.floats(0, 20 * DAY),
    max_bytes=st.integers(0, 5000),
)


@settings(max_examples=150, deadline=None)
@given(packages=packages_strategy, limits=limits_strategy, data=st.data())
def test_retention_promises(packages, limits, data) -> None:  # type: ignore[no-untyped-def]
    in_use = data.draw(st.sets(st.sampled_from([p.key for p in packages])) if packages else st.just(set()))
    removals = plan_cleanup(packages, NOW, limits, in_use)
    by_key = {p.key: p for p in packages}
    removed = [r.key for r in removals]
    assert len(removed) == len(set(removed))
    for removal in removals:
        package = by_key[removal.key]
        # Never a leased package, never one inside its seeding window.
        assert removal.key not in in_use
        assert NOW >= package.last_advertised + limits.min_seed
        if removal.reason == EXPIRED:
            assert NOW >= package.last_advertised + max(limits.keep, limits.min_seed)
    # Everything past its keep period (and not leased) goes.
    for package in packages:
        if package.key not in in_use and NOW >= package.last_advertised + max(limits.keep, limits.min_seed):
            assert Removal(package.key, EXPIRED) in removals
    evicted = [by_key[r.key] for r in removals if r.reason == OVER_LIMIT]
    if not evicted:
        return
    # Size evictions happen only under a limit, oldest first, and stop as soon as it fits.
    assert limits.max_bytes > 0
    assert [p.last_advertised for p in evicted] == sorted(p.last_advertised for p in evicted)
    kept = [p for p in packages if p.key not in removed]
    kept_size = sum(p.size for p in kept)
    assert kept_size + evicted[-1].size > limits.max_bytes
    # Nothing evictable that is older than an evicted one was spared.
    evictable_kept = [p for p in kept if p.key not in in_use and NOW >= p.last_advertised + limits.min_seed]
    if evictable_kept:
        assert min(p.last_advertised for p in evictable_kept) >= evicted[-1].last_advertised
        assert kept_size <= limits.max_bytes or not evictable_kept


@settings(max_examples=100, deadline=None)
@given(packages=packages_strategy, limits=limits_strategy)
def test_under_the_limit_only_expiry_removes(packages, limits) -> None:  # type: ignore[no-untyped-def]
    roomy = RetentionLimits(limits.min_seed, limits.keep, max_bytes=sum(p.size for p in packages) + 1)
    assert all(r.reason == EXPIRED for r in plan_cleanup(packages, NOW, roomy, set()))
    unlimited = RetentionLimits(limits.min_seed, limits.keep, max_bytes=0)
    assert all(r.reason == EXPIRED for r in plan_cleanup(packages, NOW, unlimited, set()))
