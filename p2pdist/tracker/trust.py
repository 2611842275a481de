"""What the repository will publish beyond a valid signature: torrents that point back here.

A signed torrent is what every agent trusts, so its announce URLs decide whom the agents tell
their address and packages. A publish is refused unless the torrent is private (BEP 27: no
DHT, no PEX, peers meet only through the tracker) and every URL of every tier is this site
server's own announce URL: a foreign tracker, or a plain-http tier beside an https one, would
let whoever runs it (or sits on the wire) learn and steer the agents. Which URL is "this site
server" comes from ``public_url`` in the settings, else from the publish request itself (the
URL the admin reached the server at). Each refusal is one line that says what to fix.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

from p2pdist.metainfo import Metainfo

ANNOUNCE_PATH = "/announce"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Untrusted(ValueError):
    """The torrent must not be published; the message is the one-line reason."""


def announce_url_of(base: str) -> str:
    """``https://sms-hq:6969`` (or with a path prefix) -> its announce URL."""
    return base.rstrip("/") + ANNOUNCE_PATH


def check_base_url(base: str, where: str = "public_url") -> str:
    """Validate a server base URL (scheme, host, optional port and path prefix, nothing else)."""
    parts = urlsplit(base)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{where} {base!r} is not an http:// or https:// URL")
    if parts.query or parts.fragment or parts.username is not None or parts.password is not None:
        raise ValueError(f"{where} {base!r} must have no query, fragment or user name")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{where} {base!r} has a bad port") from None
    return base


def _key(parts: SplitResult) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of a plain announce URL; None for anything with more in it."""
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], parts.path


def check_publishable(meta: Metainfo, own_announce: str) -> None:
    """Raise Untrusted unless ``meta`` is private and announces to ``own_announce`` only."""
    if not meta.info.private:
        raise Untrusted("torrent is not private (info.private must be 1: peers meet through this tracker only)")
    urls = meta.tracker_urls
    if not urls:
        raise Untrusted(f"torrent names no tracker; it must announce to {own_announce} only")
    own = _key(urlsplit(own_announce))
    for url in urls:
        theirs = _key(urlsplit(url))
        if theirs == own:
            continue
        if own is not None and theirs is not None and theirs[0] == "http" and own[0] == "https" and theirs[1:3] == own[1:3]:
            raise Untrusted(f"torrent has a plain-http tracker {url}; this site server is {own_announce}")
        raise Untrusted(f"torrent announces to {url}, which is not this site server ({own_announce})")
