"""Torrent metainfo: the validated model, piece/file layout, package identity and signing."""

from p2pdist.metainfo.identity import PackageIdentity, looks_like_package_id, normalize_package_id
from p2pdist.metainfo.layout import BLOCK_SIZE, FileSpan, Layout
from p2pdist.metainfo.model import (
    FileEntry,
    Info,
    Metainfo,
    Signature,
    encode_torrent,
    parse_metainfo,
    read_metainfo,
    reencode,
)

__all__ = [
    "BLOCK_SIZE",
    "FileEntry",
    "FileSpan",
    "Info",
    "Layout",
    "Metainfo",
    "PackageIdentity",
    "Signature",
    "encode_torrent",
    "looks_like_package_id",
    "normalize_package_id",
    "parse_metainfo",
    "read_metainfo",
    "reencode",
]
