"""Pre-staging orders: "the PCs of these sites fetch this package before any program runs".

The server never connects to a PC. An admin's order (``p2pdist prestage``) is kept here, and
each agent learns the orders of its site in the answer to its periodic report (``orders_for``):
those whose time has come, at most ``MAX_ORDERS``, newest first. A cancelled order leaves a
tombstone for ``CANCEL_KEEP`` seconds, so agents that acted on it hear of the cancellation the
same way.

An order is one (package, version or "the current one", site); ordering it again moves its
time, cancelling removes it. Its ``order_id`` names it together with its time, so an agent can
tell an order it already acted on from a new one (re-issuing an order is a new one).

Two twins keep the same contract: ``SqlitePrestage`` (the default, a file beside the catalogue)
and ``redis_prestage.RedisPrestage`` (where the peer store is Redis);
``test_tracker_prestage.py`` runs one contract against both.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from p2pdist.errors import OutputError, RemoteError

FILE = "prestage.sqlite3"
MAX_ORDERS = 32  # per report answer, and per list in it
CANCEL_KEEP = 7 * 86400.0  # how long a cancellation is told to agents
MAX_AHEAD = 366 * 86400.0  # an order's time at most this far ahead
MAX_STORED = 10_000  # orders and tombstones the server keeps


class OrderError(RemoteError, ValueError):
    """An order the server refuses (bad input from an admin's request); one line says why."""


def parse_time(text: object, now: float) -> float:
    """An ISO-8601 time with a UTC offset (``...Z`` or ``+02:00``) as a timestamp."""
    if not isinstance(text, str) or len(text) > 40:
        raise OrderError("time must be an ISO-8601 string like 2026-12-03T20:00:00Z")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise OrderError(f"bad time {text!r}: use ISO-8601 like 2026-12-03T20:00:00Z") from None
    if moment.tzinfo is None:
        raise OrderError(f"bad time {text!r}: it needs a UTC offset (Z or +HH:MM); the server's clock zone is not the admin's")
    stamp = moment.timestamp()
    if stamp > now + MAX_AHEAD:
        raise OrderError(f"bad time {text!r}: more than {MAX_AHEAD / 86400:.0f} days ahead")
    return stamp


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Order:
    package_id: str
    version: int | None  # None: whatever version is current when an agent checks in
    site: str
    at: float  # when agents start fetching (the order's time, or when it was made)
    created_at: float
    cancelled_at: float | None = None

    @property
    def order_id(self) -> str:
        return f"{self.package_id}:{'latest' if self.version is None else self.version}:{self.site}:{int(self.at)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "order": self.order_id,
            "package": self.package_id,
            "version": self.version,
            "site": self.site,
            "at": iso(self.at),
            "created_at": iso(self.created_at),
            **({"cancelled_at": iso(self.cancelled_at)} if self.cancelled_at is not None else {}),
        }


class PrestageStore(Protocol):
    async def put(self, order: Order) -> bool:
        """Keep the order (replacing one for the same package, version and site); False if it
        was there already with the same time."""

    async def cancel(self, package_id: str, version: int | None, sites: list[str] | None, now: float) -> list[Order]:
        """Remove the matching orders (``version`` None: all versions; ``sites`` None: all) and
        leave their tombstones; the removed ones."""

    async def orders(self, package_id: str | None = None, site: str | None = None) -> list[Order]:
        """Standing orders, by package, version and site."""

    async def cancelled(self, site: str, after: float) -> list[Order]:
        """Tombstones of the site's orders cancelled after ``after``, newest first (at most MAX_ORDERS)."""

    async def sweep(self, now: float) -> int:
        """Forget tombstones older than CANCEL_KEEP; how many."""

    async def close(self) -> None: ...


def due(orders: list[Order], now: float) -> list[Order]:
    """The orders an agent acts on now: their time has come; newest first, at most MAX_ORDERS."""
    return sorted((o for o in orders if o.at <= now), key=lambda o: (-o.at, o.package_id))[:MAX_ORDERS]


SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    package_id TEXT NOT NULL, version INTEGER NOT NULL, site TEXT NOT NULL,
    at REAL NOT NULL, created_at REAL NOT NULL, cancelled_at REAL,
    PRIMARY KEY (package_id, version, site)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cancelled (
    package_id TEXT NOT NULL, version INTEGER NOT NULL, site TEXT NOT NULL,
    at REAL NOT NULL, created_at REAL NOT NULL, cancelled_at REAL NOT NULL,
    PRIMARY KEY (package_id, version, site, at)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cancelled_by_site ON cancelled (site, cancelled_at);
"""
LATEST = -1  # the stored version of "the current one"


def _order(row: tuple[Any, ...]) -> Order:
    package, version, site, at, created, cancelled = row
    return Order(package, None if version == LATEST else version, site, at, created, cancelled)


def _stored(version: int | None) -> int:
    return LATEST if version is None else version


class SqlitePrestage:
    """Orders in one SQLite file beside the catalogue; several processes may share it."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open the pre-staging orders {path}: {exc}") from None

    async def put(self, order: Order) -> bool:
        key = (order.package_id, _stored(order.version), order.site)
        row = self.db.execute("SELECT at FROM orders WHERE package_id = ? AND version = ? AND site = ?", key).fetchone()
        if row is not None and row[0] == order.at:
            return False
        if row is None and self.db.execute("SELECT count(*) FROM orders").fetchone()[0] >= MAX_STORED:
            raise OrderError(f"the server keeps at most {MAX_STORED} orders; cancel some first")
        self.db.execute("INSERT OR REPLACE INTO orders VALUES (?,?,?,?,?,NULL)", (*key, order.at, order.created_at))
        return True

    async def cancel(self, package_id: str, version: int | None, sites: list[str] | None, now: float) -> list[Order]:
        query = "SELECT * FROM orders WHERE package_id = ?"
        params: list[object] = [package_id]
        if version is not None:
            query, params = query + " AND version = ?", [*params, version]
        found = [replace(_order(row), cancelled_at=now) for row in self.db.execute(query, params)]
        found = [o for o in found if sites is None or o.site in sites]
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for o in found:
                key = (o.package_id, _stored(o.version), o.site)
                self.db.execute("DELETE FROM orders WHERE package_id = ? AND version = ? AND site = ?", key)
                self.db.execute("INSERT OR REPLACE INTO cancelled VALUES (?,?,?,?,?,?)", (*key, o.at, o.created_at, now))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return sorted(found, key=lambda o: (o.package_id, _stored(o.version), o.site))

    async def orders(self, package_id: str | None = None, site: str | None = None) -> list[Order]:
        query = "SELECT * FROM orders WHERE 1"
        params: list[object] = []
        if package_id is not None:
            query, params = query + " AND package_id = ?", [*params, package_id]
        if site is not None:
            query, params = query + " AND site = ?", [*params, site]
        return [_order(row) for row in self.db.execute(query + " ORDER BY package_id, version, site LIMIT ?", (*params, MAX_STORED))]

    async def cancelled(self, site: str, after: float) -> list[Order]:
        rows = self.db.execute(
            "SELECT * FROM cancelled WHERE site = ? AND cancelled_at > ? ORDER BY cancelled_at DESC, package_id LIMIT ?",
            (site, after, MAX_ORDERS),
        )
        return [_order(row) for row in rows]

    async def sweep(self, now: float) -> int:
        return self.db.execute("DELETE FROM cancelled WHERE cancelled_at < ?", (now - CANCEL_KEEP,)).rowcount

    async def close(self) -> None:
        self.db.close()
