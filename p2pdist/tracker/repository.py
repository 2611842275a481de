"""The signed torrent repository: SQLite for the catalogue, a folder for the torrent files.

A torrent is accepted only if it parses (``parse_metainfo``), carries a package identity, is
private and announces to this site server only (``trust``), and its Ed25519 signature is VALID
for one of the configured keys; so an agent that trusts the same key can trust whatever this
server hands out. One torrent per (PackageID, version); publishing
version N+1 keeps N available until it is retired, so agents mid-download are not cut off.

The set of published info-hashes is kept in memory: the tracker asks it on every announce.
Another server process sharing the data folder picks changes up through ``refresh`` (SQLite's
``data_version`` moves when another connection commits).

Agents' reports are the console's (``ledger``), not the catalogue's.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from p2pdist.atomicfile import write_atomically
from p2pdist.errors import OutputError, RemoteError, SignatureError
from p2pdist.metainfo import Metainfo, normalize_package_id, parse_metainfo
from p2pdist.metainfo.signing import verify_signature, SignatureStatus
from p2pdist.tracker.trust import Untrusted, check_publishable

SCHEMA = """
CREATE TABLE IF NOT EXISTS packages (
    info_hash TEXT PRIMARY KEY,
    package_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    name TEXT NOT NULL,
    total_length INTEGER NOT NULL,
    file_count INTEGER NOT NULL,
    published_at REAL NOT NULL,
    retired_at REAL,
    UNIQUE (package_id, version)
);
-- Byte-only agent reports of older servers; moved to the console's ledger at start.
CREATE TABLE IF NOT EXISTS reports (
    info_hash TEXT NOT NULL,
    address TEXT NOT NULL,
    site TEXT NOT NULL,
    from_peers INTEGER NOT NULL,
    from_webseed INTEGER NOT NULL,
    uploaded INTEGER NOT NULL,
    completed INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (info_hash, address)
);
"""


class RepositoryError(RemoteError):
    """A publish, retire or report request the repository refuses; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PackageRecord:
    info_hash: str  # hex
    package_id: str
    version: int
    name: str
    total_length: int
    file_count: int
    published_at: float
    retired_at: float | None = None

    @property
    def retired(self) -> bool:
        return self.retired_at is not None

    def to_json(self) -> dict[str, object]:
        return {
            "info_hash": self.info_hash,
            "package": self.package_id,
            "version": self.version,
            "name": self.name,
            "size": self.total_length,
            "files": self.file_count,
            "published_at": self.published_at,
            "retired_at": self.retired_at,
            "torrent": f"/packages/{self.package_id}/{self.version}.torrent",
        }


_COLUMNS = "info_hash, package_id, version, name, total_length, file_count, published_at, retired_at"


class Repository:
    def __init__(self, data_dir: Path, trusted_keys: tuple[bytes, ...]) -> None:
        self.data_dir = Path(data_dir)
        self.torrent_dir = self.data_dir / "torrents"
        self.trusted_keys = trusted_keys
        try:
            self.torrent_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.data_dir / "repository.sqlite3", isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutputError(f"cannot open repository in {self.data_dir}: {exc}") from None
        self._data_version = -1
        self._tracked: frozenset[bytes] = frozenset()
        self._identities: dict[str, tuple[str, int]] = {}
        self.refresh()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ tracked info-hashes

    @property
    def tracked(self) -> frozenset[bytes]:
        """The info-hashes the tracker serves: published and not retired."""
        return self._tracked

    def is_tracked(self, info_hash: bytes) -> bool:
        return info_hash in self._tracked

    def refresh(self) -> bool:
        """Reload the published set if anyone committed since the last look; True if it did."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return False
        self._data_version = version
        rows = self.db.execute("SELECT info_hash, package_id, version, retired_at FROM packages").fetchall()
        self._tracked = frozenset(bytes.fromhex(row[0]) for row in rows if row[3] is None)
        self._identities = {row[0]: (row[1], row[2]) for row in rows}
        return True

    def identity(self, info_hash: str) -> tuple[str, int] | None:
        """(PackageID, version) of a torrent ever published here (retired too), from memory:
        every agent report names one per package."""
        return self._identities.get(info_hash)

    def _reload(self) -> None:
        self._data_version = -1
        self.refresh()

    # ----------------------------------------------------------------------------- catalogue

    def check(self, data: bytes, announce_url: str) -> Metainfo:
        """Parse and verify a torrent as a publish would; RepositoryError/SignatureError if not.

        ``announce_url`` is this server's own announce URL, the only one the torrent may name."""
        try:
            meta = parse_metainfo(data)
        except RemoteError as exc:
            raise RepositoryError(f"not a valid torrent: {exc}", 422) from None
        if meta.info.package is None:
            raise RepositoryError("torrent carries no package identity (info.p2pdist)", 422)
        if not self.trusted_keys:
            raise RepositoryError("the server has no repository public key configured", 503)
        status = verify_signature(meta, self.trusted_keys)
        if status is not SignatureStatus.VALID:
            raise SignatureError(f"torrent {meta.info.package}: {status.value}")
        try:
            check_publishable(meta, announce_url)
        except Untrusted as exc:
            raise RepositoryError(str(exc), 422) from None
        return meta

    def publish(self, data: bytes, now: float, *, announce_url: str) -> tuple[PackageRecord, bool]:
        """Store a signed torrent; (record, True) if new, (record, False) if it was there already."""
        meta = self.check(data, announce_url)
        package = meta.info.package
        assert package is not None
        info_hash = meta.info_hash_hex
        existing = self._one("WHERE package_id = ? AND version = ?", (package.package_id, package.version))
        if existing is not None and existing.info_hash != info_hash:
            raise RepositoryError(
                f"{package} is already published with another info-hash ({existing.info_hash}); "
                "publish a new version instead",
                409,
            )
        self._write_torrent(info_hash, data)
        if existing is not None:
            self.db.execute("UPDATE packages SET retired_at = NULL WHERE info_hash = ?", (info_hash,))
            self._reload()
            return self._one("WHERE info_hash = ?", (info_hash,)) or existing, existing.retired
        record = PackageRecord(
            info_hash,
            package.package_id,
            package.version,
            meta.info.name,
            meta.info.total_length,
            len(meta.info.real_files),
            now,
        )
        self.db.execute(
            f"INSERT INTO packages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            (info_hash, record.package_id, record.version, record.name, record.total_length, record.file_count, now),
        )
        self._reload()
        return record, True

    def _write_torrent(self, info_hash: str, data: bytes) -> None:
        target = self.torrent_dir / f"{info_hash}.torrent"
        try:
            write_atomically(target, data)
        except OSError as exc:
            raise OutputError(f"cannot store torrent in {self.torrent_dir}: {exc.strerror}") from None

    def retire(self, package_id: str, version: int | None, now: float) -> list[PackageRecord]:
        """Retire one version, or every version when ``version`` is None; returns what changed."""
        package_id = normalize_package_id(package_id)
        where = "WHERE package_id = ? AND retired_at IS NULL"
        params: tuple[object, ...] = (package_id,)
        if version is not None:
            where += " AND version = ?"
            params += (version,)
        records = self._many(where + " ORDER BY version DESC", params)
        if not records:
            raise RepositoryError(f"no published package {package_id}" + (f" version {version}" if version is not None else ""), 404)
        self.db.executemany(
            "UPDATE packages SET retired_at = ? WHERE info_hash = ?", [(now, r.info_hash) for r in records]
        )
        self._reload()
        return [PackageRecord(**{**r.__dict__, "retired_at": now}) for r in records]

    def packages(self, include_retired: bool = False) -> list[PackageRecord]:
        where = "" if include_retired else "WHERE retired_at IS NULL"
        return self._many(f"{where} ORDER BY package_id, version DESC", ())

    def find(self, package_id: str, version: int | None = None) -> PackageRecord | None:
        """A published (not retired) version; the highest one when ``version`` is None."""
        if version is None:
            return self._one("WHERE package_id = ? AND retired_at IS NULL ORDER BY version DESC LIMIT 1", (package_id,))
        return self._one("WHERE package_id = ? AND version = ? AND retired_at IS NULL", (package_id, version))

    def by_info_hash(self, info_hash: str) -> PackageRecord | None:
        return self._one("WHERE info_hash = ?", (info_hash,))

    def torrent(self, record: PackageRecord) -> bytes:
        try:
            return (self.torrent_dir / f"{record.info_hash}.torrent").read_bytes()
        except OSError as exc:
            raise OutputError(f"torrent file of {record.package_id} v{record.version} is missing: {exc.strerror}") from None

    def _one(self, where: str, params: tuple[object, ...]) -> PackageRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM packages {where}", params).fetchone()
        return PackageRecord(*row) if row else None

    def _many(self, where: str, params: tuple[object, ...]) -> list[PackageRecord]:
        return [PackageRecord(*row) for row in self.db.execute(f"SELECT {_COLUMNS} FROM packages {where}", params)]

    # ------------------------------------------------------------------------------- reports

    def take_legacy_reports(self) -> list[tuple[str, int, str, str, str, int, int, int, bool, float]]:
        """Rows of the byte-only ``reports`` table older servers kept here, removed as they are
        handed over to the console's ledger: (package, version, info-hash, address, site, from
        peers, from web seed, uploaded, completed, updated)."""
        rows = self.db.execute(
            "SELECT p.package_id, p.version, r.info_hash, r.address, r.site, r.from_peers, r.from_webseed, r.uploaded, "
            "r.completed, r.updated_at FROM reports r JOIN packages p ON p.info_hash = r.info_hash"
        ).fetchall()
        if rows:
            self.db.execute("DELETE FROM reports")
        return [(*row[:8], bool(row[8]), row[9]) for row in rows]
