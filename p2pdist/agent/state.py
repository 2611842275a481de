"""The agent's persistent state: one SQLite file (packages, counters, leases) plus torrent files.

SQLite in WAL mode with ``synchronous=NORMAL``: a crash loses at most the last few counter
updates, never the database, and each write is a single small row, cheap enough to run on the
event loop. The signed ``.torrent`` files and the storage resume data live beside the database
(``torrents/<info-hash>.torrent``, ``resume/<info-hash>.resume``), written temp -> fsync ->
rename so a crash leaves the old file or the new one, never half of one. Beside each torrent,
``<info-hash>.vouched`` records that this agent checked its signature (see
``torrent_source.recheck_stored``).

A database that SQLite finds damaged (not a database, malformed, failing its quick check) is
moved aside as ``agent.sqlite3.damaged-<time>`` with its journal files, and a new one is made:
the agent then rebuilds its rows from the signed torrents kept beside it, and storage re-checks
the cached data against them. A damaged file never keeps the agent down, and nothing in it is
trusted. A database that cannot be opened for other reasons (locked, no permission) is an error:
moving it would not help.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from p2pdist.atomicfile import write_atomically
from p2pdist.errors import LocalError, OutputError

log = logging.getLogger("p2pdist.agent.state")

SCHEMA_VERSION = 1
DATABASE = "agent.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS packages (
    info_hash TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    bytes_from_peers INTEGER NOT NULL DEFAULT 0,
    bytes_from_webseed INTEGER NOT NULL DEFAULT 0,
    uploaded INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    last_advertised REAL NOT NULL,
    completed_at REAL
);
CREATE INDEX IF NOT EXISTS packages_by_id ON packages (package_id, version);
CREATE TABLE IF NOT EXISTS newest_versions (
    package_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    package_id TEXT PRIMARY KEY,
    since REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS prestaged (
    order_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    package_id TEXT NOT NULL,
    info_hash TEXT NOT NULL,
    since REAL NOT NULL,
    added INTEGER NOT NULL,
    PRIMARY KEY (order_id, version)
);
CREATE TABLE IF NOT EXISTS leases (
    lease TEXT PRIMARY KEY,
    info_hash TEXT NOT NULL,
    pid INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""

COLUMNS = (
    "info_hash, package_id, version, name, size, state, error, bytes_from_peers, bytes_from_webseed, "
    "uploaded, added_at, last_advertised, completed_at"
)


MAX_PRESTAGED = 1000  # pre-staging orders remembered; the oldest are forgotten first


@dataclass(frozen=True)
class PrestagedRow:
    """An order acted on: ``added`` when this agent fetched the package for it (else it had it)."""

    order_id: str
    version: int
    package_id: str
    info_hash: str
    since: float
    added: bool


@dataclass(slots=True)  # one per held package, for the agent's lifetime
class PackageRow:
    info_hash: str
    package_id: str
    version: int
    name: str
    size: int
    state: str = "checking"
    error: str | None = None
    bytes_from_peers: int = 0
    bytes_from_webseed: int = 0
    uploaded: int = 0
    added_at: float = 0.0
    last_advertised: float = 0.0
    completed_at: float | None = None


@dataclass(frozen=True)
class LeaseRow:
    lease: str
    info_hash: str
    pid: int
    created_at: float


def secure_folder(path: Path) -> None:
    """Keep others from swapping what the agent checked before a command runs from it (POSIX).

    The pre-run check proves the files at their paths; only the folder's owner may then replace
    them. So a cache or state folder that others may write into is made owner-writable only,
    and one owned by another account (which could change that back) is refused. On Windows the
    installer gives these folders an ACL of SYSTEM and Administrators.
    """
    if os.name != "posix":
        return
    info = os.stat(path)
    if info.st_uid not in (os.geteuid(), 0):
        raise OutputError(
            f"{path} belongs to user id {info.st_uid}, not to the agent's ({os.geteuid()}) or root: "
            "its owner could swap a package's files after they are checked"
        )
    if info.st_mode & 0o022:
        os.chmod(path, info.st_mode & ~0o022)
        log.warning("%s was writable by others; it is now writable by its owner only", path)


def lock_exclusively(path: Path) -> int:
    """Hold an exclusive lock on ``path`` for as long as the returned descriptor is open.

    Two agents on one state folder would start the same torrents twice and fight over the
    files; the second one is refused. The kernel drops the lock when the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":  # pragma: no cover - Windows only
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise LocalError(f"another agent is already running on the state folder {path.parent}") from None
    return fd


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class AgentState:
    """The SQLite database and the files kept beside it, under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.torrent_dir = self.state_dir / "torrents"
        self.resume_dir = self.state_dir / "resume"
        try:
            for folder in (self.state_dir, self.torrent_dir, self.resume_dir):
                folder.mkdir(parents=True, exist_ok=True)
                secure_folder(folder)
            self._lock_fd = lock_exclusively(self.state_dir / "agent.lock")
        except OSError as exc:
            raise OutputError(f"cannot use state folder {self.state_dir}: {exc.strerror}") from None
        self.quarantined: Path | None = None  # where a damaged database was moved, if it was
        try:
            try:
                self.db = self._open()
            except sqlite3.OperationalError:
                raise
            except sqlite3.DatabaseError as exc:
                self.quarantined = self._quarantine(exc)
                self.db = self._open()
        except sqlite3.Error as exc:
            os.close(self._lock_fd)
            raise OutputError(f"cannot open the agent database in {self.state_dir}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.state_dir / DATABASE, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            verdict = db.execute("PRAGMA quick_check").fetchone()
            if verdict is None or verdict[0] != "ok":
                raise sqlite3.DatabaseError(f"quick check: {verdict[0] if verdict else 'no answer'}")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _quarantine(self, error: sqlite3.DatabaseError) -> Path:
        """Move the damaged database and its journals aside; the new name."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.state_dir / f"{DATABASE}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            source = self.state_dir / f"{DATABASE}{suffix}"
            if os.path.lexists(source):
                os.replace(source, target.with_name(target.name + suffix))
        log.error("the agent database was damaged (%s); moved it to %s and starting a new one", error, target)
        return target

    def torrent_files(self) -> list[tuple[str, bytes]]:
        """(info-hash, bytes) of every stored torrent, for rebuilding the rows after a quarantine."""
        found = []
        for path in sorted(self.torrent_dir.glob("*.torrent")):
            try:
                found.append((path.stem, path.read_bytes()))
            except OSError as exc:
                log.warning("cannot read %s: %s", path, exc.strerror)
        return found

    def close(self) -> None:
        self.db.close()
        os.close(self._lock_fd)  # releases the lock

    # ---------------------------------------------------------------------- files

    def torrent_path(self, info_hash: str) -> Path:
        return self.torrent_dir / f"{info_hash}.torrent"

    def resume_path(self, info_hash: str) -> Path:
        return self.resume_dir / f"{info_hash}.resume"

    def vouch_path(self, info_hash: str) -> Path:
        return self.torrent_dir / f"{info_hash}.vouched"

    def save_torrent(self, info_hash: str, data: bytes, vouch: str) -> None:
        """Store a torrent that passed the trust check, and the record that it did."""
        try:
            write_atomically(self.torrent_path(info_hash), data)
            self.save_vouch(info_hash, vouch)
        except OSError as exc:
            raise OutputError(f"cannot store torrent {info_hash}: {exc.strerror}") from None

    def save_vouch(self, info_hash: str, vouch: str) -> None:
        write_atomically(self.vouch_path(info_hash), vouch.encode("ascii"))

    def load_vouch(self, info_hash: str) -> str | None:
        try:
            return self.vouch_path(info_hash).read_text(encoding="ascii", errors="replace")
        except OSError:
            return None

    def load_torrent(self, info_hash: str) -> bytes | None:
        try:
            return self.torrent_path(info_hash).read_bytes()
        except OSError:
            return None

    def forget_files(self, info_hash: str) -> None:
        for path in (self.torrent_path(info_hash), self.vouch_path(info_hash), self.resume_path(info_hash)):
            _unlink(path)

    def forget_resume(self, info_hash: str) -> None:
        _unlink(self.resume_path(info_hash))

    # ---------------------------------------------------------------------- packages

    def packages(self) -> list[PackageRow]:
        rows = self.db.execute(f"SELECT {COLUMNS} FROM packages ORDER BY package_id, version").fetchall()
        return [PackageRow(*row) for row in rows]

    def save_package(self, row: PackageRow) -> None:
        self.db.execute(
            f"INSERT OR REPLACE INTO packages ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.info_hash, row.package_id, row.version, row.name, row.size, row.state, row.error,
                row.bytes_from_peers, row.bytes_from_webseed, row.uploaded, row.added_at,
                row.last_advertised, row.completed_at,
            ),
        )  # fmt: skip

    def update_package(self, info_hash: str, **values: object) -> None:
        allowed = set(COLUMNS.split(", ")) - {"info_hash"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown package columns {sorted(unknown)}")
        if not values:
            return
        assignments = ", ".join(f"{name} = ?" for name in values)
        self.db.execute(f"UPDATE packages SET {assignments} WHERE info_hash = ?", (*values.values(), info_hash))

    def delete_package(self, info_hash: str) -> None:
        # Leases stay: they end with their process, and while it runs the folder must stay too.
        self.db.execute("DELETE FROM packages WHERE info_hash = ?", (info_hash,))

    # ---------------------------------------------------------------------- versions

    def newest_version(self, package_id: str) -> int | None:
        """The newest version of ``package_id`` ever taken from the repository, if any."""
        row = self.db.execute("SELECT version FROM newest_versions WHERE package_id = ?", (package_id,)).fetchone()
        return None if row is None else int(row[0])

    def saw_version(self, package_id: str, version: int) -> None:
        self.db.execute(
            "INSERT INTO newest_versions (package_id, version) VALUES (?, ?) "
            "ON CONFLICT(package_id) DO UPDATE SET version = max(version, excluded.version)",
            (package_id, version),
        )

    # ---------------------------------------------------------------------- refusals

    def refusals(self) -> dict[str, float]:
        """PackageID -> when the repository first said it does not publish it."""
        return {row[0]: float(row[1]) for row in self.db.execute("SELECT package_id, since FROM refusals")}

    def note_refusal(self, package_id: str, since: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO refusals (package_id, since) VALUES (?, ?)", (package_id, since))

    def forget_refusal(self, package_id: str) -> None:
        self.db.execute("DELETE FROM refusals WHERE package_id = ?", (package_id,))

    # ---------------------------------------------------------------------- pre-staging

    def prestaged(self) -> list[PrestagedRow]:
        """The pre-staging orders this agent acted on (at most ``MAX_PRESTAGED``, newest kept)."""
        return [PrestagedRow(*row) for row in self.db.execute(
            "SELECT order_id, version, package_id, info_hash, since, added FROM prestaged")]  # fmt: skip

    def note_prestaged(self, row: PrestagedRow) -> None:
        self.db.execute("INSERT OR REPLACE INTO prestaged VALUES (?,?,?,?,?,?)",
                        (row.order_id, row.version, row.package_id, row.info_hash, row.since, int(row.added)))  # fmt: skip
        self.db.execute(
            "DELETE FROM prestaged WHERE rowid NOT IN (SELECT rowid FROM prestaged ORDER BY since DESC LIMIT ?)", (MAX_PRESTAGED,)
        )

    def forget_prestaged(self, order_id: str) -> None:
        self.db.execute("DELETE FROM prestaged WHERE order_id = ?", (order_id,))

    # ---------------------------------------------------------------------- leases

    def leases(self) -> list[LeaseRow]:
        return [LeaseRow(*row) for row in self.db.execute("SELECT lease, info_hash, pid, created_at FROM leases")]

    def add_lease(self, lease: LeaseRow) -> None:
        self.db.execute(
            "INSERT INTO leases (lease, info_hash, pid, created_at) VALUES (?,?,?,?)",
            (lease.lease, lease.info_hash, lease.pid, lease.created_at),
        )

    def delete_lease(self, lease: str) -> bool:
        return self.db.execute("DELETE FROM leases WHERE lease = ?", (lease,)).rowcount > 0
