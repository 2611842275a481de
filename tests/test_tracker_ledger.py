"""The console's ledger: one contract for the SQLite and Redis twins, and a model check.

The Redis twin runs against a real redis-server (the fixture of test_tracker_redis).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from p2pdist.outcomes import Problem, State
from p2pdist.tracker.ledger import DAY, SqliteLedger, Tally, change, day_of
from p2pdist.tracker.reports import ReportEntry

T0 = 20_000 * DAY + 3600.0  # a fixed wall-clock moment: day 20000, 01:00 UTC
LIMITS = dict(seen_days=7.0, history_days=30, unknown_per_address=2)
_prefixes = itertools.count()


@pytest.fixture(params=["sqlite", "redis"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "sqlite":
        twin = SqliteLedger(tmp_path / "console.sqlite3", **LIMITS)  # type: ignore[arg-type]
        yield twin
        await twin.close()
        return
    import redis.asyncio as aioredis

    from p2pdist.tracker.redis_ledger import RedisLedger

    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisLedger(client, f"L{next(_prefixes)}:", **LIMITS)  # type: ignore[arg-type]
    await client.aclose()


def entry(package: str = "PS100012", version: int | None = 3, state: State = State.DOWNLOADING, *,
          problem: Problem | None = None, peers: int = 0, webseed: int = 0, uploaded: int = 0,
          in_use: bool = False, info: bool = True) -> ReportEntry:  # fmt: skip
    return ReportEntry(package, version, ("ab" * 20) if info else None, state, 1.0 if state is State.COMPLETE else 0.3,
                       problem, "why" if problem else None, in_use, state is State.COMPLETE, peers, webseed, uploaded)  # fmt: skip


def figures(tallies: dict, key: tuple[str, int, str]) -> tuple[dict[str, int], tuple[int, int, int]]:
    tally = tallies.get(key, Tally())
    return {k: v for k, v in tally.labels.items() if v}, (tally.from_peers, tally.from_webseed, tally.uploaded)


async def test_labels_bytes_and_idempotence(ledger) -> None:
    report = [entry(problem=Problem.RANGE_UNSUPPORTED, webseed=1000)]
    assert await ledger.record(report, "Lyon", "10.0.0.1", T0) == []
    assert await ledger.record(report, "Lyon", "10.0.0.1", T0 + 1) == []  # the same report again: nothing moves
    await ledger.record([entry(peers=500)], "Lyon", "10.0.0.2", T0)
    tallies = await ledger.tallies()
    labels, sent = figures(tallies, ("PS100012", 3, "Lyon"))
    assert labels == {"seen": 2, "state:downloading": 2, "kind:range-unsupported": 1}
    assert sent == (500, 1000, 0)
    assert tallies[("PS100012", 3, "Lyon")].errors == {"range-unsupported": 1}
    # The PC completes: its labels move, its bytes grow by the difference only.
    await ledger.record([entry(state=State.COMPLETE, peers=4000, webseed=1000, uploaded=10, in_use=True)], "Lyon", "10.0.0.1", T0 + 60)
    labels, sent = figures(await ledger.tallies(), ("PS100012", 3, "Lyon"))
    assert labels == {"seen": 2, "state:downloading": 1, "state:complete": 1, "in-use": 1}
    assert sent == (4500, 1000, 10)
    # A PC whose agent lost its totals starts from zero; one that moved site moves its labels.
    await ledger.record([entry(peers=100)], "Paris", "10.0.0.2", T0 + 120)
    tallies = await ledger.tallies()
    assert figures(tallies, ("PS100012", 3, "Lyon"))[0] == {"seen": 1, "state:complete": 1, "in-use": 1}
    assert figures(tallies, ("PS100012", 3, "Paris")) == ({"seen": 1, "state:downloading": 1}, (100, 0, 0))
    history = await ledger.history(day_of(T0) - 27, day_of(T0))
    assert sum(row.from_peers for row in history) == 4600 and {row.site for row in history} == {"Lyon", "Paris"}
    assert await ledger.tallies("PS1000AA") == {}


async def test_unversioned_refusals_are_capped_and_superseded(ledger) -> None:
    gone = entry("PS1000FF", None, State.ERROR, problem=Problem.NOT_PUBLISHED, info=False)
    assert await ledger.record([gone], "Lyon", "10.0.0.9", T0) == []
    others = [entry(f"PS1000F{n}", None, State.ERROR, problem=Problem.NOT_PUBLISHED, info=False) for n in range(3)]
    refused = await ledger.record(others, "Lyon", "10.0.0.9", T0)
    assert len(refused) == 2 and "PS1000F1" in refused[0]  # two rows a PC without torrents may hold
    assert figures(await ledger.tallies(), ("PS1000FF", -1, "Lyon"))[0] == {"seen": 1, "state:error": 1, "kind:not-published": 1}
    stuck = await ledger.stuck(package_id="PS1000FF")
    assert [(r.address, r.version, r.kind, r.error) for r in stuck] == [("10.0.0.9", -1, "not-published", "why")]
    # Published after all: the PC's versioned entry replaces its refusal.
    await ledger.record([entry("PS1000FF", 1, State.COMPLETE, peers=7)], "Lyon", "10.0.0.9", T0 + 5)
    tallies = await ledger.tallies("PS1000FF")
    assert ("PS1000FF", -1, "Lyon") not in tallies or not figures(tallies, ("PS1000FF", -1, "Lyon"))[0]
    assert figures(tallies, ("PS1000FF", 1, "Lyon"))[0] == {"seen": 1, "state:complete": 1}
    assert await ledger.stuck(package_id="PS1000FF") == []
    assert await ledger.record(others[1:2], "Lyon", "10.0.0.9", T0 + 6) == []  # its slot is free again


async def test_silent_pcs_age_out_and_come_back_without_counting_twice(ledger) -> None:
    await ledger.record([entry(problem=Problem.DISK_FULL, peers=1000)], "Lyon", "10.0.0.1", T0)
    await ledger.record([entry(peers=2000)], "Lyon", "10.0.0.2", T0 + 6 * DAY)
    assert await ledger.sweep(T0 + 7 * DAY + 1) == 1  # the first PC has been silent for 7 days
    labels, sent = figures(await ledger.tallies(), ("PS100012", 3, "Lyon"))
    assert labels == {"seen": 1, "state:downloading": 1} and sent == (3000, 0, 0)  # bytes stay
    assert await ledger.stuck() == []
    await ledger.record([entry(state=State.COMPLETE, peers=1500)], "Lyon", "10.0.0.1", T0 + 8 * DAY)
    labels, sent = figures(await ledger.tallies(), ("PS100012", 3, "Lyon"))
    assert labels == {"seen": 2, "state:downloading": 1, "state:complete": 1} and sent == (3500, 0, 0)
    # After history_days a silent PC is forgotten, and so are old days.
    await ledger.sweep(T0 + 40 * DAY)
    assert figures(await ledger.tallies(), ("PS100012", 3, "Lyon"))[0] == {}
    assert await ledger.history(day_of(T0) - 1, day_of(T0 + 40 * DAY)) == []
    await ledger.record([entry(state=State.COMPLETE, peers=1500)], "Lyon", "10.0.0.1", T0 + 41 * DAY)
    assert figures(await ledger.tallies(), ("PS100012", 3, "Lyon"))[1] == (5000, 0, 0)  # forgotten: counted anew


def test_change_is_the_difference() -> None:
    first = change(None, entry(problem=Problem.SIGNATURE, peers=10), "A")
    assert first.sent == (10, 0, 0) and first.labels == Counter({("PS100012", 3, "A", l): 1 for l in ("seen", "state:downloading", "kind:signature")})
    same = change(("A", "kind:signature seen state:downloading", 10, 0, 0), entry(problem=Problem.SIGNATURE, peers=10), "A")
    assert same.sent == (0, 0, 0) and not same.labels


# ------------------------------------------------------------------------------ model check

ADDRESSES = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
SITES = ["A", "B"]
reports = st.lists(
    st.tuples(
        st.sampled_from(ADDRESSES),
        st.sampled_from(SITES),
        st.lists(
            st.builds(
                entry,
                package=st.sampled_from(["PS100012", "PS100013"]),
                version=st.sampled_from([1, 2, None]),
                state=st.sampled_from(list(State)),
                problem=st.sampled_from([None, Problem.RANGE_UNSUPPORTED, Problem.NOT_PUBLISHED]),
                peers=st.integers(0, 5),
                webseed=st.integers(0, 5),
                in_use=st.booleans(),
            ).map(lambda e: e if e.version is not None else entry(e.package_id, None, State.ERROR, problem=Problem.NOT_PUBLISHED, info=False)),
            min_size=1,
            max_size=4,
        ),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports)
def test_counters_always_equal_the_last_entry_of_every_pc(tmp_path_factory: pytest.TempPathFactory, script) -> None:  # type: ignore[no-untyped-def]
    """Whatever the order of reports, the counters are the sum of each PC's last entry."""
    folder = tmp_path_factory.mktemp("model")
    twin = SqliteLedger(folder / "c.sqlite3", seen_days=7.0, history_days=30, unknown_per_address=100)
    last: dict[tuple[str, str, int], tuple[str, ReportEntry]] = {}
    for address, site, entries in script:
        twin.record_now(entries, site, address, T0)
        for item in entries:
            if item.version is not None:
                last.pop((address, item.package_id, -1), None)
            last[(address, item.package_id, item.stored_version)] = (site, item)
    expected: Counter[tuple[str, int, str, str]] = Counter()
    for (_, package, version), (site, item) in last.items():
        for label in item.labels():
            expected[(package, version, site, label)] += 1
    tallies = asyncio.run(twin.tallies())
    got = Counter({(*key, label): n for key, tally in tallies.items() for label, n in tally.labels.items() if n})
    assert got == expected
    asyncio.run(twin.close())


async def test_legacy_reports_move_into_the_ledger(tmp_path: Path) -> None:
    from tests.support.siteserver import info_hash_of, make_settings, publish, running, signed_torrent

    torrent = signed_torrent("PS100012", 1)
    async with running(make_settings(tmp_path)) as server:
        await publish(server, torrent)
    with sqlite3.connect(tmp_path / "repository.sqlite3") as db:  # what an older server left there
        db.execute("INSERT INTO reports VALUES (?, '127.1.0.5', 'Branch', 700, 300, 5, 1, ?)", (info_hash_of(torrent).hex(), T0))
    async with running(make_settings(tmp_path)) as server:
        from p2pdist.tracker.web import STATE

        tally = (await server.runner.app[STATE].ledger.tallies())[("PS100012", 1, "Branch")]
        assert (tally.from_peers, tally.from_webseed, tally.uploaded, tally.state(State.COMPLETE)) == (700, 300, 5, 1)
    with sqlite3.connect(tmp_path / "repository.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM reports").fetchone() == (0,)
