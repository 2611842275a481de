"""The info dictionary and the torrent bytes for a scanned source.

Only content and content options go into the info dictionary: name, piece length, pieces,
files in sorted order, the private flag and the package identity. Trackers, web seeds, the
comment, the creation date and the signature stay outside it, so the same content and options
give the same info-hash whoever builds it and whenever.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import p2pdist
from p2pdist import bencode
from p2pdist.creator.hashing import HashInput, hash_pieces
from p2pdist.creator.scan import Source
from p2pdist.errors import InputError, UsageError
from p2pdist.metainfo import Metainfo, PackageIdentity, encode_torrent, parse_metainfo
from p2pdist.metainfo.model import MAX_PIECE_LENGTH, MIN_PIECE_LENGTH, MAX_URL_BYTES
from p2pdist.records import Record

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

CREATED_BY = f"p2pdist {p2pdist.__version__}"
AUTO_MAX_PIECE_LENGTH = 16 * 1024 * 1024
AUTO_MAX_PIECES = 2000
TRACKER_SCHEMES = ("http", "https", "udp")
WEB_SEED_SCHEMES = ("http", "https")

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def auto_piece_length(total: int, maximum: int = AUTO_MAX_PIECE_LENGTH) -> int:
    """The smallest power of two giving at most 2000 pieces (so 1000-2000), in 16 KiB..``maximum``."""
    length = MIN_PIECE_LENGTH
    while length < maximum and -(-total // length) > AUTO_MAX_PIECES:
        length *= 2
    return length


def parse_piece_size(text: str) -> int:
    """``256K``, ``1M``, ``1MiB``, ``4194304`` or mktorrent's exponent (``20`` = 1 MiB)."""
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"piece size {text!r} is not a size like 256K, 1M or 4194304")
    number, unit = int(match.group(1)), match.group(2).lower()
    if not unit and 14 <= number <= MAX_PIECE_LENGTH.bit_length() - 1:
        number, unit = 1 << number, ""
    size = number * _UNITS[unit]
    if size & (size - 1) or not MIN_PIECE_LENGTH <= size <= MAX_PIECE_LENGTH:
        raise UsageError(f"piece size {text!r} must be a power of two from 16K to {MAX_PIECE_LENGTH >> 20}M")
    return size


def check_url(url: str, schemes: tuple[str, ...], what: str) -> str:
    """Refuse a URL that stock clients or our own parser would drop."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise UsageError(f"{what} {url!r} is not a {'/'.join(schemes)} URL")
    if any(ord(ch) < 33 for ch in url) or len(url.encode()) > MAX_URL_BYTES:
        raise UsageError(f"{what} {url!r} has spaces or control characters or is too long")
    return url


class TorrentOptions(Record):
    """What the admin chose; ``piece_length`` None means automatic."""

    trackers: tuple[tuple[str, ...], ...] = ()
    web_seeds: tuple[str, ...] = ()
    private: bool = True
    piece_length: int | None = None
    comment: str | None = None
    package: PackageIdentity | None = None
    creation_date: int | None = None
    created_by: str = CREATED_BY
    max_piece_length: int | None = None  # a ceiling for the automatic choice
    source_tag: str | None = None  # info["source"]: another info-hash for the same files (torf -s)


def info_dict(
    source: Source, piece_length: int, pieces: bytes, private: bool, package: PackageIdentity | None, source_tag: str | None = None
) -> dict[bytes, object]:
    info: dict[bytes, object] = {
        b"name": source.name,
        b"piece length": piece_length,
        b"pieces": pieces,
    }
    if source.multi_file:
        info[b"files"] = [{b"length": f.size, b"path": list(f.torrent_path[1:])} for f in source.files]
    else:
        info[b"length"] = source.files[0].size
    if private:
        info[b"private"] = 1
    if package is not None:
        info[b"p2pdist"] = package.to_bencode()
    if source_tag:
        info[b"source"] = source_tag
    return info


def doubled_folder(url: str, name: str) -> str | None:
    """A warning when a web seed URL already ends with the package's folder: BEP 19 appends the
    torrent's name to a URL ending in ``/``, so clients would ask for ``.../NAME/NAME/...``."""
    path = urlsplit(url).path
    if not path.endswith("/"):
        return None
    last = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    if last.casefold() != name.casefold():
        return None
    parent = url[: len(url) - len(url.rstrip("/").rsplit("/", 1)[-1]) - 1]
    return (
        f"web seed {url} already ends with the package folder {name}/: clients append the name "
        f"(BEP 19) and would fetch {url}{name}/...; give the folder that holds it, {parent}"
    )


def _check_unchanged(source: Source) -> None:
    """A file written to while it was hashed gives a torrent nobody can complete."""
    for item in source.files:
        try:
            now = item.disk_path.stat()
        except OSError as exc:
            raise InputError(f"cannot read {item.disk_path}: {exc.strerror}") from None
        if now.st_size != item.size or now.st_mtime_ns != item.mtime_ns:
            raise InputError(f"{item.disk_path} changed while hashing; run again once it is stable")


def build_torrent(
    source: Source,
    options: TorrentOptions,
    *,
    sign_key: Ed25519PrivateKey | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[bytes, Metainfo]:
    """Hash ``source`` and return the torrent bytes and their parsed form."""
    piece_length = options.piece_length or auto_piece_length(source.total_size, options.max_piece_length or AUTO_MAX_PIECE_LENGTH)
    inputs = [HashInput(f.disk_path, f.size) for f in source.files]
    pieces = hash_pieces(inputs, piece_length, threads=threads, progress=progress)
    _check_unchanged(source)
    raw_info = bencode.encode(info_dict(source, piece_length, pieces, options.private, options.package, options.source_tag))
    data = encode_torrent(
        raw_info,
        trackers=options.trackers,
        web_seeds=options.web_seeds,
        comment=options.comment,
        created_by=options.created_by,
        creation_date=options.creation_date,
    )
    meta = parse_metainfo(data)
    if sign_key is not None:
        from p2pdist.metainfo.signing import sign_torrent

        data = sign_torrent(meta, sign_key)
        meta = parse_metainfo(data)
    return data, meta
