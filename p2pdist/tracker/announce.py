"""Sans-IO codec for HTTP tracker announces (BEP 3, 7, 23) and scrapes (BEP 48).

The agent builds URLs and parses responses with it; the site server parses queries and renders
responses with it, so both ends agree on one implementation. Nothing here touches a socket.

Query strings are handled as bytes: ``info_hash`` and ``peer_id`` are 20 raw bytes, and a
``str`` round trip through UTF-8 would corrupt them. Decoding is strict (a bad ``%`` escape,
a duplicate parameter, an out-of-range number is an ``AnnounceError`` with the reason) and
bounded (query length, parameter count, digits), so a hostile request costs its own size.
"""

from __future__ import annotations

import codecs
import functools
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote, quote_from_bytes, urlsplit, urlunsplit

from p2pdist import bencode
from p2pdist.errors import BencodeError, RemoteError

HASH_LEN = 20
EVENTS = ("", "started", "completed", "stopped", "paused")  # "paused": BEP 21, a plain re-announce
MAX_QUERY_BYTES = 8192
MAX_PARAMS = 64
MAX_TEXT_PARAM = 255  # ip (a DNS name may be that long) and key
MAX_NUMWANT = 2**31 - 1
MAX_COUNTER = 2**63 - 1
MAX_SCRAPE_HASHES = 256
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
SITE_NETWORKS = b"p2pdist site networks"
FAILURE_KIND = b"p2pdist failure kind"  # beside a failure reason: a ``Problem`` word agents act on
MAX_SITE_NETWORKS = 256
RESPONSE_LIMITS = bencode.Limits(max_depth=8, max_tokens=400_000, max_string=MAX_RESPONSE_BYTES, max_int_digits=20)


class AnnounceError(RemoteError):
    """A malformed announce or scrape query, or a malformed tracker response."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrackerFailure(RemoteError):
    """The tracker answered with a ``failure reason``; ``retry_in`` (BEP 31) if it gave one,
    ``kind`` when a site server said which ``Problem`` it is (e.g. ``not-published``)."""

    def __init__(self, reason: str, retry_in: int | None = None, kind: str | None = None) -> None:
        super().__init__(f"tracker refused: {reason}")
        self.reason = reason
        self.retry_in = retry_in
        self.kind = kind


class AnnounceRequest(NamedTuple):
    """One announce; a tuple because the tracker parses one per request (a frozen dataclass
    costs several times more to build)."""

    info_hash: bytes
    peer_id: bytes
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: str = ""  # "", "started", "completed", "stopped" ("paused" is read as a plain announce)
    numwant: int | None = None
    compact: bool = True
    no_peer_id: bool = False
    ip: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class AnnounceResponse:
    interval: int
    min_interval: int | None = None
    peers: tuple[tuple[str, int], ...] = ()  # IPv4 and IPv6 (BEP 7 peers6)
    complete: int = 0
    incomplete: int = 0
    warning: str | None = None
    # Parallel to ``peers`` when known; only the non-compact (dictionary) form carries them.
    peer_ids: tuple[bytes, ...] = field(default=(), compare=False)
    # p2pdist's site server: the subnets (CIDR) of the asker's site, the only peers it may dial.
    site_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScrapeStats:
    complete: int = 0
    downloaded: int = 0
    incomplete: int = 0


@dataclass(frozen=True)
class ScrapeResponse:
    files: Mapping[bytes, ScrapeStats] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- queries

_HEX_DIGITS = b"0123456789abcdefABCDEF"
_UNHEX = {bytes([a, b]): bytes([int(bytes([a, b]), 16)]) for a in _HEX_DIGITS for b in _HEX_DIGITS}
# CPython's C decoder of backslash escapes: turning each "%" into "\\x" lets it do the %-decoding
# about ten times faster than a Python loop (a binary info_hash is mostly escapes). It is not
# part of the documented codecs API, so the plain loop stays as the fallback.
_escape_decode = getattr(codecs, "escape_decode", None)
_BAD_ESCAPE = "bad %-escape in query string"


def _unquote_loop(value: bytes) -> bytes:
    parts = value.split(b"%")
    try:
        return parts[0] + b"".join([_UNHEX[part[:2]] + part[2:] for part in parts[1:]])
    except KeyError:
        raise AnnounceError(_BAD_ESCAPE) from None


def _unquote_c(value: bytes) -> bytes:
    try:
        return _escape_decode(value.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]  # type: ignore[misc]  # codecs.escape_decode is typed as maybe None
    except ValueError:  # "invalid \\x escape": a % without two hex digits after it
        raise AnnounceError(_BAD_ESCAPE) from None


def unquote_bytes(value: bytes) -> bytes:
    """Strict binary-safe %-decoding: a ``%`` not followed by two hex digits is an error."""
    if b"%" not in value:
        return value
    return _unquote_c(value) if _escape_decode is not None else _unquote_loop(value)


def split_query(query: bytes) -> list[tuple[bytes, bytes]]:
    """``a=1&b=2`` -> raw (name, %-encoded value) pairs, bounded in size and count."""
    if len(query) > MAX_QUERY_BYTES:
        raise AnnounceError(f"query string longer than {MAX_QUERY_BYTES} bytes")
    pairs = []
    for item in query.split(b"&"):
        if not item:
            continue
        name, _, value = item.partition(b"=")
        pairs.append((name, value))
    if len(pairs) > MAX_PARAMS:
        raise AnnounceError(f"more than {MAX_PARAMS} query parameters")
    return pairs


def _fields(query: bytes) -> dict[bytes, bytes]:
    """Name -> raw value, with the same bounds as ``split_query`` and no name twice."""
    if len(query) > MAX_QUERY_BYTES:
        raise AnnounceError(f"query string longer than {MAX_QUERY_BYTES} bytes")
    items = query.split(b"&")
    given = len(items) - items.count(b"")
    if given > MAX_PARAMS:
        raise AnnounceError(f"more than {MAX_PARAMS} query parameters")
    fields = {name: value for name, _, value in [item.partition(b"=") for item in items if item]}
    if len(fields) != given:  # some name came twice: say which
        seen = set()
        for item in items:
            name = item.partition(b"=")[0]
            if item and name in seen:
                raise AnnounceError(f"duplicate parameter {name.decode('latin-1')!r}")
            seen.add(name)
    return fields


def _hash_param(fields: dict[bytes, bytes], name: bytes) -> bytes:
    raw = fields.get(name)
    if raw is None:
        raise AnnounceError(f"missing {name.decode()}")
    value = unquote_bytes(raw)
    if len(value) != HASH_LEN:
        raise AnnounceError(f"{name.decode()} must be {HASH_LEN} bytes, got {len(value)}")
    return value


def _uint(fields: dict[bytes, bytes], name: bytes, maximum: int, default: int | None = None, cap: bool = False) -> int:
    raw = fields.get(name)
    if raw is None:
        if default is None:
            raise AnnounceError(f"missing {name.decode()}")
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise AnnounceError(f"{name.decode()} must be a non-negative integer of at most 20 digits")
    value = int(raw)
    if value > maximum:
        if cap:
            return maximum
        raise AnnounceError(f"{name.decode()} {value} exceeds {maximum}")
    return value


def _text(fields: dict[bytes, bytes], name: bytes) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    value = unquote_bytes(raw)
    if len(value) > MAX_TEXT_PARAM:
        raise AnnounceError(f"{name.decode()} longer than {MAX_TEXT_PARAM} bytes")
    if not all(0x21 <= b < 0x7F for b in value):
        raise AnnounceError(f"{name.decode()} must be printable ASCII")
    return value.decode("ascii")


def _flag(fields: dict[bytes, bytes], name: bytes, default: bool) -> bool:
    raw = fields.get(name)
    if raw is None:
        return default
    if raw not in (b"0", b"1"):
        raise AnnounceError(f"{name.decode()} must be 0 or 1")
    return raw == b"1"


def parse_announce_query(query: bytes) -> AnnounceRequest:
    """Parse the raw query string of an ``/announce`` request; AnnounceError says what is wrong."""
    fields = _fields(query)
    get = fields.get
    port, left = get(b"port", b""), get(b"left", b"")
    uploaded, downloaded = get(b"uploaded", b"0"), get(b"downloaded", b"0")
    # The usual announce has plain, short numbers; anything else takes the checks that say why.
    if (0 < len(port) < 6 and port.isdigit() and 0 < int(port) < 65536 and 0 < len(left) < 19 and left.isdigit()
            and len(uploaded) < 19 and uploaded.isdigit() and len(downloaded) < 19 and downloaded.isdigit()):  # fmt: skip
        numbers = int(port), int(uploaded), int(downloaded), int(left)
    else:
        numbers = _numbers(fields)
    event = get(b"event", b"").decode("latin-1")
    if event not in EVENTS:
        raise AnnounceError(f"unknown event {event[:32]!r}")
    return AnnounceRequest(  # positional: a NamedTuple is built several times faster that way
        _hash_param(fields, b"info_hash"),
        _hash_param(fields, b"peer_id"),
        *numbers,
        event,
        None if get(b"numwant") is None else _uint(fields, b"numwant", MAX_NUMWANT, cap=True),
        _flag(fields, b"compact", True),
        _flag(fields, b"no_peer_id", False),
        None if get(b"ip") is None else _text(fields, b"ip"),
        None if get(b"key") is None else _text(fields, b"key"),
    )


def _numbers(fields: dict[bytes, bytes]) -> tuple[int, int, int, int]:
    """(port, uploaded, downloaded, left), each checked with a reason when it is wrong."""
    port = _uint(fields, b"port", 65535)
    if port == 0:
        raise AnnounceError("port must be 1-65535")
    return (
        port,
        _uint(fields, b"uploaded", MAX_COUNTER, default=0),
        _uint(fields, b"downloaded", MAX_COUNTER, default=0),
        _uint(fields, b"left", MAX_COUNTER),
    )


def _with_query(url: str, params: list[str]) -> str:
    parts = urlsplit(url)
    query = "&".join(([parts.query] if parts.query else []) + params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def build_announce_url(announce_url: str, request: AnnounceRequest) -> str:
    """The GET URL for ``request``; binary fields %-encoded, the URL's own query kept first."""
    params = [
        "info_hash=" + quote_from_bytes(request.info_hash, safe=""),
        "peer_id=" + quote_from_bytes(request.peer_id, safe=""),
        f"port={request.port}",
        f"uploaded={request.uploaded}",
        f"downloaded={request.downloaded}",
        f"left={request.left}",
        f"compact={int(request.compact)}",
    ]
    if request.no_peer_id:
        params.append("no_peer_id=1")
    if request.event:
        params.append(f"event={request.event}")
    if request.numwant is not None:
        params.append(f"numwant={request.numwant}")
    if request.ip is not None:
        params.append("ip=" + quote(request.ip, safe=""))
    if request.key is not None:
        params.append("key=" + quote(request.key, safe=""))
    return _with_query(announce_url, params)


# -------------------------------------------------------------------------------- responses


@functools.lru_cache(maxsize=65536)
def _compact_peer(ip: str, port: int) -> tuple[bool, bytes]:
    """(is IPv6, 6- or 18-byte compact form) of one peer; cached, peers re-announce."""
    tail = port.to_bytes(2, "big")
    if ":" in ip:
        return True, socket.inet_pton(socket.AF_INET6, ip) + tail
    return False, socket.inet_aton(ip) + tail


def encode_announce_response(response: AnnounceResponse, compact: bool = True) -> bytes:
    """Bencoded success response: compact ``peers``/``peers6`` or a list of peer dictionaries."""
    if compact:
        return _encode_compact(response)
    body: dict[bytes, object] = {
        b"complete": response.complete,
        b"incomplete": response.incomplete,
        b"interval": response.interval,
    }
    if response.min_interval is not None:
        body[b"min interval"] = response.min_interval
    if response.site_networks:
        body[SITE_NETWORKS] = [network.encode() for network in response.site_networks]
    if response.warning:
        body[b"warning message"] = response.warning.encode()
    ids = response.peer_ids if len(response.peer_ids) == len(response.peers) else None
    peers = []
    for index, (ip, port) in enumerate(response.peers):
        entry: dict[bytes, object] = {b"ip": ip.encode(), b"port": port}
        if ids is not None:
            entry[b"peer id"] = ids[index]
        peers.append(entry)
    body[b"peers"] = peers
    return bencode.encode(body)


def _encode_compact(response: AnnounceResponse) -> bytes:
    v4: list[bytes] = []
    v6: list[bytes] = []
    for ip, port in response.peers:
        is_v6, packed = _compact_peer(ip, port)
        (v6 if is_v6 else v4).append(packed)
    warning = response.warning.encode() if response.warning else None
    return encode_compact_body(
        response.interval, response.min_interval, response.complete, response.incomplete,
        b"".join(v4), b"".join(v6), warning, site_networks_field(response.site_networks),
    )  # fmt: skip


def site_networks_field(networks: tuple[str, ...]) -> bytes:
    """The bencoded ``p2pdist site networks`` key and value (empty: no field), made once per
    site by the tracker and spliced into every compact reply."""
    if not networks:
        return b""
    return bencode.encode(SITE_NETWORKS) + bencode.encode([network.encode() for network in networks])


def encode_compact_body(
    interval: int,
    min_interval: int | None,
    complete: int,
    incomplete: int,
    peers: bytes,
    peers6: bytes = b"",
    warning: bytes | None = None,
    networks: bytes = b"",
) -> bytes:
    """The compact announce reply written out by hand: a tracker's hot path, so no generic
    bencoder. Keys in bencoding's sorted order; ``peers``/``peers6`` are the joined 6-/18-byte
    BEP 23 / BEP 7 entries. The tests check it against ``bencode.encode``."""
    head = b"d8:completei%de10:incompletei%de8:intervali%de" % (complete, incomplete, interval)
    if min_interval is not None:
        head += b"12:min intervali%de" % min_interval
    head += networks  # "p2pdist site networks" sorts between "min interval" and "peers"
    tail = b"6:peers6%d:%se" % (len(peers6), peers6) if peers6 else b"e"
    if warning:
        tail = tail[:-1] + b"15:warning message%d:%se" % (len(warning), warning)
    return b"%s5:peers%d:%s%s" % (head, len(peers), peers, tail)


def encode_failure(reason: str, retry_in: int | None = None, kind: str | None = None) -> bytes:
    body: dict[bytes, object] = {b"failure reason": reason.encode()}
    if retry_in is not None:
        body[b"retry in"] = retry_in
    if kind is not None:
        body[FAILURE_KIND] = kind.encode()  # stock clients ignore keys they do not know
    return bencode.encode(body)


def _decode_dict(body: bytes) -> Mapping[bytes, object]:
    if len(body) > MAX_RESPONSE_BYTES:
        raise AnnounceError(f"tracker response larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        value = bencode.decode(body, RESPONSE_LIMITS)
    except BencodeError as exc:
        raise AnnounceError(f"tracker response is not valid bencoding: {exc}") from None
    if not isinstance(value, dict):
        raise AnnounceError("tracker response is not a dictionary")
    failure = value.get(b"failure reason")
    if failure is not None:
        if not isinstance(failure, bytes):
            raise AnnounceError("failure reason is not a string")
        retry = value.get(b"retry in")
        kind = value.get(FAILURE_KIND)
        raise TrackerFailure(
            failure.decode("utf-8", "replace"),
            retry if isinstance(retry, int) else None,
            kind.decode("ascii", "replace")[:40] if isinstance(kind, bytes) else None,
        )
    return value


def _count(value: Mapping[bytes, object], key: bytes, default: int | None = 0) -> int | None:
    item = value.get(key)
    if item is None:
        return default
    if not isinstance(item, int) or item < 0:
        raise AnnounceError(f"{key.decode()} is not a non-negative integer")
    return item


def _unpack_compact(blob: bytes, size: int) -> list[tuple[str, int]]:
    if len(blob) % size:
        raise AnnounceError(f"compact peer list length {len(blob)} is not a multiple of {size}")
    family = socket.AF_INET if size == 6 else socket.AF_INET6
    return [
        (socket.inet_ntop(family, blob[i : i + size - 2]), int.from_bytes(blob[i + size - 2 : i + size], "big"))
        for i in range(0, len(blob), size)
    ]


def _dict_peers(items: list[object]) -> tuple[list[tuple[str, int]], list[bytes]]:
    peers, ids = [], []
    for item in items:
        if not isinstance(item, dict):
            raise AnnounceError("peer entry is not a dictionary")
        ip, port = item.get(b"ip"), item.get(b"port")
        if not isinstance(ip, bytes) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise AnnounceError("peer entry needs a string ip and a port 0-65535")
        try:
            address = str(ipaddress.ip_address(ip.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            raise AnnounceError("peer entry ip is not an IP address") from None
        peers.append((address, port))
        peer_id = item.get(b"peer id")
        ids.append(peer_id if isinstance(peer_id, bytes) else b"")
    return peers, ids


def _site_networks(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_SITE_NETWORKS:
        raise AnnounceError(f"site networks is not a list of at most {MAX_SITE_NETWORKS} networks")
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(item.decode("ascii"), strict=False)))
        except (AttributeError, UnicodeDecodeError, ValueError):
            raise AnnounceError("site networks holds something that is not a network") from None
    return tuple(networks)


def parse_announce_response(body: bytes) -> AnnounceResponse:
    """Parse a tracker's reply; ``failure reason`` -> TrackerFailure, anything malformed -> AnnounceError."""
    value = _decode_dict(body)
    interval = _count(value, b"interval", None)
    if interval is None:
        raise AnnounceError("tracker response has no interval")
    raw_peers = value.get(b"peers", b"")
    ids: list[bytes] = []
    if isinstance(raw_peers, bytes):
        peers = _unpack_compact(raw_peers, 6)
    elif isinstance(raw_peers, list):
        peers, ids = _dict_peers(raw_peers)
    else:
        raise AnnounceError("peers is neither a string nor a list")
    raw_peers6 = value.get(b"peers6", b"")
    if not isinstance(raw_peers6, bytes):
        raise AnnounceError("peers6 is not a string")
    peers += _unpack_compact(raw_peers6, 18)
    site_networks = _site_networks(value.get(SITE_NETWORKS, []))
    warning = value.get(b"warning message")
    return AnnounceResponse(
        interval=interval,
        min_interval=_count(value, b"min interval", None),
        peers=tuple(peers),
        complete=_count(value, b"complete") or 0,
        incomplete=_count(value, b"incomplete") or 0,
        warning=warning.decode("utf-8", "replace") if isinstance(warning, bytes) else None,
        peer_ids=tuple(ids) if ids and not raw_peers6 else (),
        site_networks=site_networks,
    )


# ----------------------------------------------------------------------------------- scrape


def scrape_url(announce_url: str) -> str | None:
    """BEP 48: the scrape URL, when the last path part starts with ``announce``; else None."""
    parts = urlsplit(announce_url)
    head, _, last = parts.path.rpartition("/")
    if not last.startswith("announce"):
        return None
    path = f"{head}/scrape{last[len('announce'):]}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def build_scrape_url(announce_url: str, info_hashes: Iterable[bytes]) -> str:
    """The GET URL scraping ``info_hashes``; AnnounceError when the tracker has no scrape URL."""
    base = scrape_url(announce_url)
    if base is None:
        raise AnnounceError(f"announce URL {announce_url!r} has no scrape counterpart")
    params = []
    for info_hash in info_hashes:
        if len(info_hash) != HASH_LEN:
            raise AnnounceError(f"info_hash must be {HASH_LEN} bytes, got {len(info_hash)}")
        params.append("info_hash=" + quote_from_bytes(info_hash, safe=""))
    return _with_query(base, params)


def parse_scrape_query(query: bytes) -> tuple[bytes, ...]:
    """The info-hashes a scrape asks for, in order, duplicates dropped; () means all."""
    hashes: dict[bytes, None] = {}
    for name, raw in split_query(query):
        if name != b"info_hash":
            continue
        value = unquote_bytes(raw)
        if len(value) != HASH_LEN:
            raise AnnounceError(f"info_hash must be {HASH_LEN} bytes, got {len(value)}")
        hashes[value] = None
    if len(hashes) > MAX_SCRAPE_HASHES:
        raise AnnounceError(f"more than {MAX_SCRAPE_HASHES} info_hash parameters")
    return tuple(hashes)


def encode_scrape_response(response: ScrapeResponse) -> bytes:
    files = {
        info_hash: {b"complete": s.complete, b"downloaded": s.downloaded, b"incomplete": s.incomplete}
        for info_hash, s in response.files.items()
    }
    return bencode.encode({b"files": files})


def parse_scrape_response(body: bytes) -> ScrapeResponse:
    value = _decode_dict(body)
    files = value.get(b"files", {})
    if not isinstance(files, dict):
        raise AnnounceError("scrape files is not a dictionary")
    result: dict[bytes, ScrapeStats] = {}
    for info_hash, stats in files.items():
        if len(info_hash) != HASH_LEN or not isinstance(stats, dict):
            raise AnnounceError("scrape entry needs a 20-byte info-hash and a dictionary")
        result[info_hash] = ScrapeStats(
            complete=_count(stats, b"complete") or 0,
            downloaded=_count(stats, b"downloaded") or 0,
            incomplete=_count(stats, b"incomplete") or 0,
        )
    return ScrapeResponse(result)
