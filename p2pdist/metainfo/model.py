"""A frozen, validated model of a BitTorrent v1 torrent (BEP 3, 12, 19, 27, 47).

``parse_metainfo`` is the only way in from bytes: it decodes strictly, checks every field with an
exact reason, and takes the info-hash over the info dictionary's bytes as received. File paths
in the model are relative to the download folder and already include the torrent's name for a
multi-file torrent, so storage joins them under one root and nothing else.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

from p2pdist import bencode
from p2pdist.errors import BencodeError, MetainfoError
from p2pdist.metainfo.identity import PackageIdentity
from p2pdist.metainfo.paths import check_component, check_no_collisions, check_path
from p2pdist.records import Record

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from collections.abc import Mapping

HASH_LEN = 20
MIN_PIECE_LENGTH = 16 * 1024
# The ecosystem's ceiling: libtorrent's and qBittorrent's creators stop at 16 MiB, and a peer
# holds a whole piece in memory to verify it, so a larger piece is a memory lever, not a feature.
MAX_PIECE_LENGTH = 16 * 1024 * 1024
MAX_TORRENT_BYTES = 64 * 1024 * 1024
MAX_PIECES = 2_000_000
MAX_FILES = 100_000
MAX_TRACKERS = 64
MAX_WEB_SEEDS = 64
MAX_URL_BYTES = 2048


class FileEntry(Record):
    """One file of the torrent's byte stream; ``pad`` files (BEP 47) are never written."""

    path: tuple[str, ...]
    length: int
    offset: int
    pad: bool = False

    @property
    def relpath(self) -> str:
        return "/".join(self.path)


class Info(Record, hidden=("piece_hashes",)):
    name: str
    piece_length: int
    piece_hashes: bytes
    files: tuple[FileEntry, ...]
    multi_file: bool
    private: bool
    package: PackageIdentity | None
    total_length: int

    @property
    def num_pieces(self) -> int:
        return len(self.piece_hashes) // HASH_LEN

    def piece_hash(self, index: int) -> bytes:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} outside 0..{self.num_pieces - 1}")
        return self.piece_hashes[index * HASH_LEN : (index + 1) * HASH_LEN]

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} outside 0..{self.num_pieces - 1}")
        if index == self.num_pieces - 1:
            return self.total_length - index * self.piece_length
        return self.piece_length

    @property
    def real_files(self) -> tuple[FileEntry, ...]:
        """The files that exist on disk (pad files left out)."""
        return tuple(f for f in self.files if not f.pad)


class Signature(Record):
    """The repository's Ed25519 signature, kept outside the info dictionary."""

    public_key: bytes
    signature: bytes


class Metainfo(Record, hidden=("raw_info",)):
    info: Info
    info_hash: bytes
    raw_info: bytes
    trackers: tuple[tuple[str, ...], ...] = ()
    web_seeds: tuple[str, ...] = ()
    comment: str | None = None
    created_by: str | None = None
    creation_date: int | None = None
    signature: Signature | None = None

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()

    @property
    def name(self) -> str:
        return self.info.name

    @cached_property
    def tracker_urls(self) -> tuple[str, ...]:
        return tuple(url for tier in self.trackers for url in tier)


def _text(value: object, where: str) -> str:
    if not isinstance(value, bytes):
        raise MetainfoError(f"{where} is not a string")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MetainfoError(f"{where} is not valid UTF-8") from None


def _url(value: object, where: str) -> str:
    url = _text(value, where)
    if len(url.encode()) > MAX_URL_BYTES:  # the bytes _text decoded
        raise MetainfoError(f"{where} longer than {MAX_URL_BYTES} bytes")
    if any(ord(ch) < 33 for ch in url):
        raise MetainfoError(f"{where} contains spaces or control characters")
    return url


def _int(value: object, where: str, minimum: int = 0) -> int:
    if not isinstance(value, int):
        raise MetainfoError(f"{where} is not an integer")
    if value < minimum:
        raise MetainfoError(f"{where} is {value}, below {minimum}")
    return value


def _path_of(entry: Mapping[bytes, object], where: str) -> tuple[str, ...]:
    raw = entry.get(b"path.utf-8", entry.get(b"path"))
    if not isinstance(raw, list):
        raise MetainfoError(f"{where}.path is not a list")
    return tuple(_text(part, f"{where}.path") for part in raw)


def _attributes(entry: Mapping[bytes, object], where: str) -> bytes:
    """A file's BEP 47 ``attr`` letters; a symlink is refused, never read as a plain file.

    Storage writes every entry as a regular file, so a link entry would become a file with the
    link's bytes (or, in a client that honours it, a link out of the package): neither is a
    package anybody signed off.
    """
    attr = entry.get(b"attr", b"")
    if not isinstance(attr, bytes):
        raise MetainfoError(f"{where}.attr is not a string")
    if b"l" in attr or b"symlink path" in entry:
        raise MetainfoError(f"{where} is a symlink (BEP 47 attr 'l'); packages hold regular files only")
    return attr


def _parse_files(info: Mapping[bytes, object], name: str) -> tuple[tuple[FileEntry, ...], bool]:
    if b"length" in info and b"files" in info:
        raise MetainfoError("info has both 'length' and 'files'")
    if b"length" in info:
        length = _int(info[b"length"], "info.length")
        _attributes(info, "info")
        return (FileEntry((name,), length, 0),), False
    raw_files = info.get(b"files")
    if not isinstance(raw_files, list) or not raw_files:
        raise MetainfoError("info needs 'length' or a non-empty 'files' list")
    if len(raw_files) > MAX_FILES:
        raise MetainfoError(f"torrent has {len(raw_files)} files, more than {MAX_FILES}")
    files: list[FileEntry] = []
    offset = 0
    for number, entry in enumerate(raw_files):
        where = f"info.files[{number}]"
        if not isinstance(entry, dict):
            raise MetainfoError(f"{where} is not a dictionary")
        length = _int(entry.get(b"length"), f"{where}.length")
        pad = b"p" in _attributes(entry, where)
        parts = _path_of(entry, where)
        # Pad files are never written, but their paths reach storage and logs like any other,
        # so they obey the same rules; only the collision check leaves them out (BEP 47 pad
        # files often share one name).
        check_path(parts, where)
        files.append(FileEntry((name, *parts), length, offset, pad))
        offset += length
    check_no_collisions(f.path for f in files if not f.pad)
    return tuple(files), True


def parse_info(raw_info: bytes, info: Mapping[bytes, object]) -> Info:
    """Validate a decoded info dictionary (``raw_info`` only for error context)."""
    name = _text(info.get(b"name.utf-8", info.get(b"name")), "info.name")
    check_component(name, "info.name")
    piece_length = _int(info.get(b"piece length"), "info.piece length", 1)
    if piece_length < MIN_PIECE_LENGTH or piece_length & (piece_length - 1):
        raise MetainfoError(f"piece length {piece_length} is not a power of two >= {MIN_PIECE_LENGTH}")
    if piece_length > MAX_PIECE_LENGTH:
        raise MetainfoError(f"piece length {piece_length} exceeds {MAX_PIECE_LENGTH}")
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes):
        raise MetainfoError("info.pieces is not a string")
    if len(pieces) % HASH_LEN:
        raise MetainfoError(f"info.pieces has {len(pieces)} bytes, not a multiple of {HASH_LEN}")
    private_value = info.get(b"private", 0)
    if private_value not in (0, 1):
        raise MetainfoError("info.private must be 0 or 1")
    files, multi_file = _parse_files(info, name)
    total = sum(f.length for f in files)
    if total <= 0:
        raise MetainfoError("torrent has no data (total length 0)")
    expected = -(-total // piece_length)
    if expected > MAX_PIECES:
        raise MetainfoError(f"torrent has {expected} pieces, more than {MAX_PIECES}")
    if len(pieces) // HASH_LEN != expected:
        raise MetainfoError(
            f"info.pieces holds {len(pieces) // HASH_LEN} hashes but {total} bytes need {expected} pieces"
        )
    package = PackageIdentity.from_bencode(info[b"p2pdist"]) if b"p2pdist" in info else None
    return Info(name, piece_length, pieces, files, multi_file, private_value == 1, package, total)


def _parse_trackers(top: Mapping[bytes, object]) -> tuple[tuple[str, ...], ...]:
    tiers: list[tuple[str, ...]] = []
    announce_list = top.get(b"announce-list")
    if announce_list is not None:
        if not isinstance(announce_list, list):
            raise MetainfoError("announce-list is not a list")
        for number, tier in enumerate(announce_list):
            if not isinstance(tier, list):
                raise MetainfoError(f"announce-list[{number}] is not a list")
            urls = tuple(_url(url, f"announce-list[{number}]") for url in tier)
            if urls:
                tiers.append(urls)
    if not tiers and b"announce" in top:
        tiers.append((_url(top[b"announce"], "announce"),))
    if sum(len(t) for t in tiers) > MAX_TRACKERS:
        raise MetainfoError(f"more than {MAX_TRACKERS} trackers")
    return tuple(tiers)


def _parse_web_seeds(top: Mapping[bytes, object]) -> tuple[str, ...]:
    raw = top.get(b"url-list")
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, bytes) else raw
    if not isinstance(items, list):
        raise MetainfoError("url-list is not a string or list")
    if len(items) > MAX_WEB_SEEDS:
        raise MetainfoError(f"more than {MAX_WEB_SEEDS} web seeds")
    return tuple(_url(url, "url-list") for url in items if url != b"")


def _parse_signature(top: Mapping[bytes, object]) -> Signature | None:
    block = top.get(b"p2pdist")
    if block is None:
        return None
    if not isinstance(block, dict):
        raise MetainfoError("p2pdist block is not a dictionary")
    key, sig = block.get(b"key"), block.get(b"signature")
    if not isinstance(key, bytes) or len(key) != 32:
        raise MetainfoError("p2pdist.key is not a 32-byte Ed25519 public key")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise MetainfoError("p2pdist.signature is not a 64-byte Ed25519 signature")
    return Signature(key, sig)


def parse_metainfo(data: bytes) -> Metainfo:
    """Parse and validate torrent bytes; raises BencodeError or MetainfoError (both RemoteError)."""
    if len(data) > MAX_TORRENT_BYTES:
        raise MetainfoError(f"torrent file of {len(data)} bytes exceeds {MAX_TORRENT_BYTES}")
    try:
        top, spans = bencode.decode_spans(data)
    except BencodeError:
        raise
    raw_info_value = top.get(b"info")
    if not isinstance(raw_info_value, dict):
        raise MetainfoError("torrent has no info dictionary")
    start, end = spans[b"info"]
    raw_info = bytes(data[start:end])
    info = parse_info(raw_info, raw_info_value)
    comment = top.get(b"comment")
    created_by = top.get(b"created by")
    creation_date = top.get(b"creation date")
    return Metainfo(
        info=info,
        info_hash=hashlib.sha1(raw_info).digest(),
        raw_info=raw_info,
        trackers=_parse_trackers(top),
        web_seeds=_parse_web_seeds(top),
        comment=_text(comment, "comment") if comment is not None else None,
        created_by=_text(created_by, "created by") if created_by is not None else None,
        creation_date=creation_date if isinstance(creation_date, int) else None,
        signature=_parse_signature(top),
    )


def read_metainfo(path: str) -> Metainfo:
    """Read and parse a .torrent file, refusing oversized files before reading them whole."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_TORRENT_BYTES + 1)
    return parse_metainfo(data)


def encode_torrent(
    raw_info: bytes,
    *,
    trackers: tuple[tuple[str, ...], ...] = (),
    web_seeds: tuple[str, ...] = (),
    comment: str | None = None,
    created_by: str | None = None,
    creation_date: int | None = None,
    signature: Signature | None = None,
) -> bytes:
    """Build torrent bytes around an already-encoded info dictionary (kept byte for byte)."""
    top: dict[bytes, object] = {b"info": bencode.Raw(raw_info)}
    if trackers:
        top[b"announce"] = trackers[0][0]
        if len(trackers) > 1 or len(trackers[0]) > 1:
            top[b"announce-list"] = [list(tier) for tier in trackers]
    if web_seeds:
        top[b"url-list"] = list(web_seeds)
    if comment:
        top[b"comment"] = comment
    if created_by:
        top[b"created by"] = created_by
    if creation_date is not None:
        top[b"creation date"] = creation_date
    if signature is not None:
        top[b"p2pdist"] = {b"key": signature.public_key, b"signature": signature.signature}
    return bencode.encode(top)


def reencode(meta: Metainfo, **changes: object) -> bytes:
    """Torrent bytes for ``meta`` with some top-level fields replaced (info kept as received)."""
    fields: dict[str, object] = {
        "trackers": meta.trackers,
        "web_seeds": meta.web_seeds,
        "comment": meta.comment,
        "created_by": meta.created_by,
        "creation_date": meta.creation_date,
        "signature": meta.signature,
    }
    fields.update(changes)
    # The callers pass encode_torrent's own keywords; a wrong one is a TypeError right here.
    return encode_torrent(meta.raw_info, **fields)  # type: ignore[arg-type]  # values typed object
