"""SMS package identity: PackageID (site code + 5 hex digits) and SourceVersion."""

from __future__ import annotations

from p2pdist.errors import MetainfoError
from p2pdist.metainfo.package_id import PACKAGE_ID_RE, looks_like_package_id, normalize_package_id
from p2pdist.records import Record

__all__ = ["PACKAGE_ID_RE", "PackageIdentity", "looks_like_package_id", "normalize_package_id"]


class PackageIdentity(Record, order=True):
    """Which SMS package and which SourceVersion a torrent carries; one torrent per pair."""

    package_id: str
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.package_id, str) or not PACKAGE_ID_RE.match(self.package_id):
            raise MetainfoError(f"package id {self.package_id!r} is not a PackageID")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or not 0 <= self.version < 2**31:
            raise MetainfoError(f"package version {self.version} out of range")

    def to_bencode(self) -> dict[bytes, object]:
        return {b"package": self.package_id.encode(), b"version": self.version}

    @classmethod
    def from_bencode(cls, value: object) -> PackageIdentity:
        if not isinstance(value, dict):
            raise MetainfoError("info.p2pdist is not a dictionary")
        package = value.get(b"package")
        version = value.get(b"version")
        if not isinstance(package, bytes) or not isinstance(version, int):
            raise MetainfoError("info.p2pdist needs a string 'package' and an integer 'version'")
        try:
            package_id = package.decode("ascii")
        except UnicodeDecodeError:
            raise MetainfoError("info.p2pdist.package is not ASCII") from None
        return cls(package_id, version)

    def __str__(self) -> str:
        return f"{self.package_id} v{self.version}"
