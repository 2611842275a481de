"""Pre-staging orders: one contract for the SQLite and Redis twins, and the time parser.

The Redis twin runs against a real redis-server (the fixture of test_tracker_redis).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pdist.tracker.prestage import CANCEL_KEEP, MAX_AHEAD, MAX_ORDERS, Order, OrderError, SqlitePrestage, due, parse_time

T0 = 1_800_000_000.0
_prefixes = itertools.count()


@pytest.fixture(params=["sqlite", "redis"])
async def orders(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    if request.param == "sqlite":
        twin = SqlitePrestage(tmp_path / "prestage.sqlite3")
        yield twin
        await twin.close()
        return
    import redis.asyncio as aioredis

    from p2pdist.tracker.redis_prestage import RedisPrestage

    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisPrestage(client, f"P{next(_prefixes)}:")
    await client.aclose()


def order(package: str = "PS100012", version: int | None = 3, site: str = "Lyon", at: float = T0) -> Order:
    return Order(package, version, site, at, T0 - 60)


async def test_put_replace_list_and_cancel(orders) -> None:
    assert await orders.put(order()) is True
    assert await orders.put(order()) is False  # the same order again changes nothing
    assert await orders.put(order(site="Paris", version=None)) is True
    assert await orders.put(order("PS1000AA", 1, "Lyon", T0 + 3600)) is True
    assert [o.order_id for o in await orders.orders()] == [
        "PS100012:latest:Paris:1800000000", "PS100012:3:Lyon:1800000000", "PS1000AA:1:Lyon:1800003600",
    ]  # fmt: skip
    assert [o.site for o in await orders.orders("PS100012")] == ["Paris", "Lyon"]
    assert [o.package_id for o in await orders.orders(site="Lyon")] == ["PS100012", "PS1000AA"]
    # Ordered again for later: the same order moves; its id says it is a new one.
    assert await orders.put(order(at=T0 + 60)) is True
    (moved,) = [o for o in await orders.orders("PS100012", "Lyon")]
    assert (moved.at, moved.created_at, moved.order_id) == (T0 + 60, T0 - 60, "PS100012:3:Lyon:1800000060")
    # Cancel one site's order: it leaves a tombstone the site's agents are told of.
    (gone,) = await orders.cancel("PS100012", None, ["Lyon"], T0 + 100)
    assert (gone.site, gone.version, gone.cancelled_at) == ("Lyon", 3, T0 + 100)
    assert [o.site for o in await orders.orders("PS100012")] == ["Paris"]
    assert [o.order_id for o in await orders.cancelled("Lyon", T0)] == ["PS100012:3:Lyon:1800000060"]
    assert await orders.cancelled("Lyon", T0 + 100) == [] and await orders.cancelled("Paris", T0) == []
    assert await orders.cancel("PS100012", 7, None, T0 + 101) == []  # nothing matches: nothing changes
    (latest,) = await orders.cancel("PS100012", None, None, T0 + 200)
    assert latest.version is None and latest.to_json()["cancelled_at"] == "2027-01-15T08:03:20Z"
    assert await orders.orders("PS100012") == []
    assert await orders.sweep(T0 + 150 + CANCEL_KEEP) == 1  # Lyon's tombstone is old enough
    assert [o.site for o in await orders.cancelled("Paris", 0)] == ["Paris"]
    assert await orders.cancelled("Lyon", 0) == []


def test_due_is_bounded_newest_first() -> None:
    many = [order(f"PS1{n:05X}", 1, "Lyon", T0 + n) for n in range(MAX_ORDERS + 10)]
    chosen = due(many + [order("PS1FFFFF", 1, "Lyon", T0 + 10_000)], T0 + 100)
    assert len(chosen) == MAX_ORDERS and chosen[0].at == T0 + MAX_ORDERS + 9
    assert all(o.at <= T0 + 100 for o in chosen)  # the one for later is not due yet


def test_parse_time() -> None:
    assert parse_time("2027-01-15T07:56:40Z", T0) == 1_800_000_000.0 - 200
    assert parse_time("2027-01-15T08:56:40+01:00", T0) == 1_800_000_000.0 - 200
    for bad, why in [("2027-01-15 08:00", "UTC offset"), ("tomorrow", "ISO-8601"), (5, "ISO-8601"), ("2099-01-01T00:00:00Z", "days ahead")]:
        with pytest.raises(OrderError, match=why):
            parse_time(bad, T0)
    assert parse_time("2027-01-15T08:00:00Z", T0 + 10**6) < T0 + 10**6 + MAX_AHEAD  # a past time is fine: due at once
