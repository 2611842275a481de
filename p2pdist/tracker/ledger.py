"""The console's ledger: what every PC last reported, kept as counters per package x site.

Theory of operation
-------------------
A site server of a large company hears from 100k PCs about 20 packages each: two million
(PC, package) states, which must not live in the server's memory, while the console asks for a
handful of numbers per package and site ("12 of 40 complete, 3 range-unsupported"). So:

* **one row per (PC, package version)** holds that PC's last entry (``agents``): its site, its
  totals, and the *labels* it adds to its (package, version, site): ``seen``,
  ``state:<state>``, ``kind:<problem>`` (not complete), ``in-use``
  (``tracker.reports.ReportEntry.labels``);
* **counters per (package, version, site, label)** (``tallies``) move by the difference
  between a PC's old labels and its new ones, in the same transaction as its row, so they are
  always exact and reading them costs the number of sites, not of PCs;
* **bytes** move by the difference between a PC's old totals and its new ones: into all-time
  totals per (package, version, site) and into a **history** per UTC day, which gives the
  7- and 28-day savings. A total lower than before (the agent lost its state) counts from zero.

A report sent twice changes nothing (the same labels and totals replace themselves), and a PC
that stops reporting for ``seen_days`` is taken out of the counters by the sweep (its row keeps
its totals, so a PC that comes back is not counted twice) and forgotten after
``history_days``, as are the days of history. An entry for a package the PC could not get a
torrent for is stored under version ``UNVERSIONED`` when it asked for the newest; a later entry
of that package with a version replaces it. Such entries are capped per address, since their
PackageIDs are not checked against the catalogue.

Two twins keep the same rules: ``SqliteLedger`` (the default, a file beside the catalogue;
several processes may share it) and ``redis_ledger.RedisLedger`` (where the peer store is Redis).
``test_tracker_ledger.py`` runs one contract against both.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from p2pdist.errors import OutputError
from p2pdist.outcomes import State
from p2pdist.tracker.reports import IN_USE, KIND_LABEL, SEEN, STATE_LABEL, UNVERSIONED, ReportEntry

DAY = 86400
SWEEP_BATCH = 5000  # rows looked at between two yields to the event loop
FILE = "console.sqlite3"


def day_of(timestamp: float) -> int:
    """Days since 1970-01-01 UTC."""
    return int(timestamp // DAY)


@dataclass
class Tally:
    """One (package, version, site): its counters and bytes."""

    labels: Counter[str] = field(default_factory=Counter)
    from_peers: int = 0
    from_webseed: int = 0
    uploaded: int = 0

    @property
    def agents(self) -> int:
        return self.labels[SEEN]

    @property
    def in_use(self) -> int:
        return self.labels[IN_USE]

    def state(self, state: State) -> int:
        return self.labels[STATE_LABEL + state]

    @property
    def errors(self) -> dict[str, int]:
        return {k[len(KIND_LABEL) :]: n for k, n in sorted(self.labels.items()) if k.startswith(KIND_LABEL) and n}

    def add(self, other: Tally) -> None:
        self.labels.update(other.labels)
        self.from_peers += other.from_peers
        self.from_webseed += other.from_webseed
        self.uploaded += other.uploaded


TallyKey = tuple[str, int, str]  # package, stored version, site


class DayBytes(NamedTuple):
    day: int
    package_id: str
    version: int
    site: str
    from_peers: int
    from_webseed: int
    uploaded: int


class AgentRow(NamedTuple):
    """A PC's last entry for one package version, as the console lists stuck PCs."""

    address: str
    package_id: str
    version: int
    site: str
    state: str
    kind: str
    error: str
    progress: float
    updated_at: float


class Ledger(Protocol):
    async def record(self, entries: list[ReportEntry], site: str, address: str, now: float) -> list[str]:
        """Store one PC's entries; the reasons of those refused (one per refused entry)."""

    async def tallies(self, package_id: str | None = None) -> dict[TallyKey, Tally]: ...

    async def history(self, first_day: int, last_day: int, package_id: str | None = None) -> list[DayBytes]:
        """Bytes per day, package version and site, for days ``first_day`` to ``last_day``."""

    async def stuck(self, package_id: str | None = None, site: str | None = None, limit: int = 100) -> list[AgentRow]:
        """PCs whose last entry has a problem and is recent enough to count, newest first."""

    async def sweep(self, now: float) -> int:
        """Age out silent PCs and old history; how many rows changed."""

    async def close(self) -> None: ...


class Change(NamedTuple):
    """What one entry does to the counters (pure: both twins apply the same)."""

    labels: Counter[tuple[str, int, str, str]]  # (package, version, site, label) -> delta
    sent: tuple[int, int, int]  # bytes to add: from peers, from the web seed, uploaded


def _growth(new: int, was: int) -> int:
    return new - was if new >= was else new


def change(old: tuple[str, str, int, int, int] | None, entry: ReportEntry, site: str, labels: str | None = None) -> Change:
    """``old`` = (site, labels, from_peers, from_webseed, uploaded) of the PC's previous row;
    ``labels`` the entry's labels joined by blanks, when the caller has them already."""
    package, version = entry.package_id, entry.stored_version
    labels = " ".join(entry.labels()) if labels is None else labels
    now_totals = (entry.from_peers, entry.from_webseed, entry.uploaded)
    if old is None:
        return Change(Counter({(package, version, site, label): 1 for label in labels.split()}), now_totals)
    before = old[2:]
    # Each counter's growth since the last report; a counter below its last value restarted.
    sent = (_growth(now_totals[0], before[0]), _growth(now_totals[1], before[1]), _growth(now_totals[2], before[2]))
    if old[0] == site and old[1] == labels:
        return Change(Counter(), sent)  # the usual refresh: nothing moves
    delta: Counter[tuple[str, int, str, str]] = Counter()
    for label in old[1].split():
        delta[(package, version, old[0], label)] -= 1
    for label in labels.split():
        delta[(package, version, site, label)] += 1
    return Change(Counter({k: v for k, v in delta.items() if v}), sent)


SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    address TEXT NOT NULL,
    package_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    site TEXT NOT NULL,
    info_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    kind TEXT NOT NULL,
    error TEXT NOT NULL,
    progress REAL NOT NULL,
    from_peers INTEGER NOT NULL,
    from_webseed INTEGER NOT NULL,
    uploaded INTEGER NOT NULL,
    labels TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (address, package_id, version)
) WITHOUT ROWID;
-- Each row is in one of these two: the sweep walks only the rows that still count, the
-- forgetting only those that no longer do, however many silent PCs are kept.
CREATE INDEX IF NOT EXISTS agents_counting ON agents (updated_at) WHERE labels != '';
CREATE INDEX IF NOT EXISTS agents_silent ON agents (updated_at) WHERE labels = '';
CREATE INDEX IF NOT EXISTS agents_with_problems ON agents (package_id, site) WHERE kind != '' AND labels != '';
CREATE TABLE IF NOT EXISTS tallies (
    package_id TEXT NOT NULL, version INTEGER NOT NULL, site TEXT NOT NULL, label TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (package_id, version, site, label)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    package_id TEXT NOT NULL, version INTEGER NOT NULL, site TEXT NOT NULL,
    from_peers INTEGER NOT NULL, from_webseed INTEGER NOT NULL, uploaded INTEGER NOT NULL,
    PRIMARY KEY (package_id, version, site)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    day INTEGER NOT NULL, package_id TEXT NOT NULL, version INTEGER NOT NULL, site TEXT NOT NULL,
    from_peers INTEGER NOT NULL, from_webseed INTEGER NOT NULL, uploaded INTEGER NOT NULL,
    PRIMARY KEY (day, package_id, version, site)
) WITHOUT ROWID;
"""

_ROW = (
    "INSERT INTO agents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (address, package_id, version) DO UPDATE SET "
    "site=excluded.site, info_hash=excluded.info_hash, state=excluded.state, kind=excluded.kind, error=excluded.error, "
    "progress=excluded.progress, from_peers=excluded.from_peers, from_webseed=excluded.from_webseed, "
    "uploaded=excluded.uploaded, labels=excluded.labels, updated_at=excluded.updated_at"
)
_TALLY = (
    "INSERT INTO tallies VALUES (?,?,?,?,?) ON CONFLICT (package_id, version, site, label) DO UPDATE SET "
    "count = count + excluded.count"
)
_TOTALS = (
    "INSERT INTO totals VALUES (?,?,?,?,?,?) ON CONFLICT (package_id, version, site) DO UPDATE SET "
    "from_peers = from_peers + excluded.from_peers, from_webseed = from_webseed + excluded.from_webseed, "
    "uploaded = uploaded + excluded.uploaded"
)
_HISTORY = (
    "INSERT INTO history VALUES (?,?,?,?,?,?,?) ON CONFLICT (day, package_id, version, site) DO UPDATE SET "
    "from_peers = from_peers + excluded.from_peers, from_webseed = from_webseed + excluded.from_webseed, "
    "uploaded = uploaded + excluded.uploaded"
)


class SqliteLedger:
    """The default ledger: one SQLite file; counters and rows change in one transaction per report."""

    def __init__(self, path: Path, *, seen_days: float, history_days: int, unknown_per_address: int) -> None:
        self.seen_seconds = seen_days * DAY
        self.history_days = history_days
        self.unknown_per_address = unknown_per_address
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open the console ledger {path}: {exc}") from None

    async def record(self, entries: list[ReportEntry], site: str, address: str, now: float) -> list[str]:
        return self.record_now(entries, site, address, now)

    def record_now(self, entries: list[ReportEntry], site: str, address: str, now: float) -> list[str]:
        db = self.db
        refused: list[str] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            old = {
                (row[0], row[1]): row[2:]
                for row in db.execute(
                    "SELECT package_id, version, site, labels, from_peers, from_webseed, uploaded, info_hash "
                    "FROM agents WHERE address = ?",
                    (address,),
                )
            }
            unknown = sum(1 for row in old.values() if not row[5])
            labels: Counter[tuple[str, int, str, str]] = Counter()
            sent: dict[tuple[str, int, str], list[int]] = {}
            rows: dict[tuple[str, int], tuple[object, ...]] = {}
            superseded = []
            for entry in entries:
                key = (entry.package_id, entry.stored_version)
                previous = old.get(key)
                if previous is None and entry.info_hash is None:
                    if unknown >= self.unknown_per_address:
                        refused.append(f"{entry.package_id}: more than {self.unknown_per_address} packages without a torrent from this address")
                        continue
                    unknown += 1
                if entry.version is not None and (stale := old.pop((entry.package_id, UNVERSIONED), None)) is not None:
                    for label in stale[1].split():
                        labels[(entry.package_id, UNVERSIONED, stale[0], label)] -= 1
                    superseded.append((address, entry.package_id, UNVERSIONED))
                    rows.pop((entry.package_id, UNVERSIONED), None)
                    unknown -= 1
                text = " ".join(entry.labels())
                moved = change(previous[:5] if previous is not None else None, entry, site, text)
                if moved.labels:
                    labels.update(moved.labels)
                if any(moved.sent):
                    into = sent.setdefault((entry.package_id, entry.stored_version, site), [0, 0, 0])
                    for i, amount in enumerate(moved.sent):
                        into[i] += amount
                old[key] = (site, text, entry.from_peers, entry.from_webseed, entry.uploaded, entry.info_hash or "")
                rows[key] = _row(address, entry, site, now, text)
            db.executemany("DELETE FROM agents WHERE address = ? AND package_id = ? AND version = ?", superseded)
            db.executemany(_ROW, rows.values())
            db.executemany(_TALLY, [(*k, n) for k, n in labels.items() if n])
            day = day_of(now)
            db.executemany(_TOTALS, [(*k, *v) for k, v in sent.items()])
            db.executemany(_HISTORY, [(day, *k, *v) for k, v in sent.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return refused

    async def tallies(self, package_id: str | None = None) -> dict[TallyKey, Tally]:
        where, params = ("WHERE package_id = ?", (package_id,)) if package_id else ("", ())
        result: dict[TallyKey, Tally] = {}
        for package, version, site, label, count in self.db.execute(
            f"SELECT package_id, version, site, label, count FROM tallies {where}", params
        ):
            if count:
                result.setdefault((package, version, site), Tally()).labels[label] = count
        for package, version, site, peers, webseed, uploaded in self.db.execute(
            f"SELECT package_id, version, site, from_peers, from_webseed, uploaded FROM totals {where}", params
        ):
            tally = result.setdefault((package, version, site), Tally())
            tally.from_peers, tally.from_webseed, tally.uploaded = peers, webseed, uploaded
        return result

    async def history(self, first_day: int, last_day: int, package_id: str | None = None) -> list[DayBytes]:
        query = "SELECT day, package_id, version, site, from_peers, from_webseed, uploaded FROM history WHERE day BETWEEN ? AND ?"
        params: tuple[object, ...] = (first_day, last_day)
        if package_id:
            query, params = query + " AND package_id = ?", (*params, package_id)
        return [DayBytes(*row) for row in self.db.execute(query + " ORDER BY day", params)]

    async def stuck(self, package_id: str | None = None, site: str | None = None, limit: int = 100) -> list[AgentRow]:
        query = (
            "SELECT address, package_id, version, site, state, kind, error, progress, updated_at FROM agents "
            "WHERE kind != '' AND labels != ''"
        )
        params: list[object] = []
        if package_id is not None:
            query += " AND package_id = ?"
            params.append(package_id)
        if site is not None:
            query += " AND site = ?"
            params.append(site)
        query += " ORDER BY updated_at DESC LIMIT ?"
        return [AgentRow(*row) for row in self.db.execute(query, (*params, limit))]

    async def sweep(self, now: float) -> int:
        """Silent PCs out of the counters, then forgotten; old days dropped. Yields as it goes."""
        changed = 0
        cutoff = now - self.seen_seconds
        while True:
            stale = self.db.execute(
                "SELECT address, package_id, version, site, labels FROM agents WHERE updated_at < ? AND labels != '' LIMIT ?",
                (cutoff, SWEEP_BATCH),
            ).fetchall()
            if not stale:
                break
            labels: Counter[tuple[str, int, str, str]] = Counter()
            for _, package, version, site, text in stale:
                for label in text.split():
                    labels[(package, version, site, label)] -= 1
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "UPDATE agents SET labels = '' WHERE address = ? AND package_id = ? AND version = ?",
                    [row[:3] for row in stale],
                )
                self.db.executemany(_TALLY, [(*k, n) for k, n in labels.items()])
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            changed += len(stale)
            await asyncio.sleep(0)
        forget = now - self.history_days * DAY
        changed += self.db.execute("DELETE FROM agents WHERE updated_at < ? AND labels = ''", (forget,)).rowcount
        self.db.execute("DELETE FROM history WHERE day < ?", (day_of(forget),))
        self.db.execute("DELETE FROM tallies WHERE count = 0")
        return changed

    async def close(self) -> None:
        self.db.close()


def _row(address: str, entry: ReportEntry, site: str, now: float, labels: str) -> tuple[object, ...]:
    problem = "" if entry.problem is None or entry.state is State.COMPLETE else str(entry.problem)
    return (
        address, entry.package_id, entry.stored_version, site, entry.info_hash or "", str(entry.state), problem,
        entry.error or "", entry.progress, entry.from_peers, entry.from_webseed, entry.uploaded, labels, now,
    )  # fmt: skip

