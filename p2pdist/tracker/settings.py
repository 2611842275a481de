"""The site server's settings (``site.toml``), as frozen dataclasses with embedded defaults.

Everything has a default that runs with no other service: in-memory peer store, SQLite and a
folder of torrents under ``data_dir``. Loaded with ``p2pdist.config.load_settings``; a typo in
a key is a ConfigError naming it. ``docs/site-server.md`` shows a complete example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import sys
from pathlib import Path

import platformdirs

from p2pdist.config import ConfigError, load_settings
from p2pdist.metainfo.signing import trusted_keys
from p2pdist.tracker.trust import check_base_url


def default_data_dir() -> Path:
    """The machine's data folder, never a user's: a site server is a service, not a login.

    ``%ProgramData%\\p2pdist\\server`` on Windows, ``/var/lib/p2pdist/server`` on Linux and other
    POSIX systems (``p2pdist server init DIR`` writes a config that keeps everything in DIR).
    """
    if sys.platform == "win32":
        return platformdirs.site_data_path("p2pdist", appauthor=False) / "server"
    return Path("/var/lib/p2pdist/server")


@dataclass(frozen=True)
class ListenSettings:
    host: str = "0.0.0.0"
    port: int = 6969
    tls_cert: Path | None = None  # PEM certificate chain; TLS is on when both files are set
    tls_key: Path | None = None
    max_line_size: int = 8190  # longest request line accepted (an announce is ~300 bytes)
    max_field_size: int = 8190  # longest header line
    max_headers: int = 64
    shutdown_timeout: float = 5.0  # seconds open requests get to finish on SIGTERM/SIGINT
    keepalive_timeout: float = 75.0  # a kept-alive connection may wait this long for its next request
    # A request head must be complete this many seconds after the accept, or after the first
    # byte of the next request on a kept-alive connection: a deadline, never restarted by a
    # byte, so a client trickling a head holds its socket for this long and no longer.
    head_timeout: float = 10.0
    # Connections one source address may hold at once (configured proxies are exempt); the
    # excess is closed at accept. An agent needs a few; 0 = no cap.
    connections_per_address: int = 32
    # A request body (a publish, a report) must be read whole this many seconds after its
    # handler starts reading: nothing else bounds a client trickling one.
    body_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"listen.port {self.port} outside 0-65535")
        if self.keepalive_timeout <= 0 or self.head_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("listen.keepalive_timeout, head_timeout and body_timeout must be positive")
        if self.connections_per_address < 0:
            raise ValueError("listen.connections_per_address must be >= 0 (0 = no cap)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("listen.tls_cert and listen.tls_key must be set together")


@dataclass(frozen=True)
class TrackerSettings:
    interval: int = 1800  # seconds between a peer's regular announces
    min_interval: int = 300
    peer_expiry: int = 2700  # a peer not heard from for this long is dropped (1.5 x interval)
    numwant_default: int = 50
    numwant_max: int = 200
    sweep_interval: float = 60.0  # how often expired peers are removed
    repository_refresh: float = 5.0  # how often another instance's publish/retire is picked up
    # Announces naming a lower port are refused: the tracker would otherwise point every PC of
    # a site at ssh, smtp or a domain controller's services of whoever announced them.
    min_peer_port: int = 1024

    def __post_init__(self) -> None:
        if self.interval < 1 or self.min_interval < 0 or self.min_interval > self.interval:
            raise ValueError("tracker.interval must be >= 1 and tracker.min_interval within 0..interval")
        if self.peer_expiry < self.interval:
            raise ValueError("tracker.peer_expiry must be at least tracker.interval")
        if not 0 <= self.numwant_default <= self.numwant_max:
            raise ValueError("tracker.numwant_default must be within 0..numwant_max")
        if not 1 <= self.min_peer_port <= 65535:
            raise ValueError("tracker.min_peer_port must be within 1..65535")
        if self.sweep_interval <= 0 or self.repository_refresh <= 0:
            raise ValueError("tracker.sweep_interval and tracker.repository_refresh must be positive")


@dataclass(frozen=True)
class LocationSettings:
    """A branch office (or floor) inside a site, by its subnets."""

    name: str
    subnets: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteSettings:
    """A site: peers are only ever introduced to peers of the same site."""

    name: str
    subnets: tuple[str, ...] = ()
    locations: tuple[LocationSettings, ...] = ()
    seeds: tuple[str, ...] = ()  # "address:port" (IPv6 as "[addr]:port"), offered to every location
    # False: a location's PCs meet their own location's PCs first, then the rest of the site.
    # True for locations that are branch offices behind their own WAN links: a PC then meets only
    # PCs of its own location (and the site's seeds), so no piece crosses two WAN links.
    isolate_locations: bool = False


@dataclass(frozen=True)
class LimitSettings:
    announce_rate: float = 2.0  # announces+scrapes per second per address (token refill); 0 = off
    announce_burst: int = 60  # bucket size: an agent starting many packages at once
    peers_per_address: int = 5000  # registrations (torrent x endpoint) per address; 0 = off
    max_report_bytes: int = 65536  # a report of 64 packages is about 20 KiB
    max_torrent_bytes: int = 16 * 1024 * 1024
    max_tracked_addresses: int = 1_000_000  # rate-limit table size before idle entries are dropped


@dataclass(frozen=True)
class ReportSettings:
    """What the console keeps of the agents' reports (``ledger``)."""

    # A PC counts in its site's figures (seen, complete, in error) while its last report for
    # the package is this recent; agents report every package at least hourly.
    seen_days: float = 7.0
    # Daily bytes (the 7- and 28-day savings) are kept this long, and so are silent PCs' rows.
    history_days: int = 400
    # Packages without a torrent (never published, retired) one address may report: their
    # PackageIDs are not in the catalogue, so this is what bounds them.
    unknown_per_address: int = 32

    def __post_init__(self) -> None:
        if self.seen_days <= 0:
            raise ValueError("seen_days must be positive")
        if self.history_days < max(28, self.seen_days):
            raise ValueError("history_days must be at least 28 (the savings window) and at least seen_days")
        if self.unknown_per_address < 0:
            raise ValueError("unknown_per_address must not be negative")


@dataclass(frozen=True)
class PageSettings:
    """The status page (``/``, ``/package/<id>``, ``/site/<site>``)."""

    # Seconds between the page's own reloads (an HTML meta refresh, no script); 0 = never.
    # Agents report at most every few minutes, so a minute shows every change soon enough.
    refresh: int = 60

    def __post_init__(self) -> None:
        if self.refresh != 0 and not 5 <= self.refresh <= 86400:
            raise ValueError("refresh must be 0 (off) or 5..86400 seconds")


@dataclass(frozen=True)
class StoreSettings:
    backend: str = "memory"  # "memory" or "redis" (several instances share one view)
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "p2pdist:"

    def __post_init__(self) -> None:
        if self.backend not in ("memory", "redis"):
            raise ValueError(f"store.backend must be 'memory' or 'redis', not {self.backend!r}")


@dataclass(frozen=True)
class ServerSettings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    data_dir: Path = field(default_factory=default_data_dir)
    admin_token: str = ""  # prefer admin_token_file; empty and no file = admin API disabled
    admin_token_file: Path | None = None
    public_keys: tuple[str, ...] = ()  # trusted repository keys, 64 hex digits or PEM
    public_key_files: tuple[Path, ...] = ()
    tracker: TrackerSettings = field(default_factory=TrackerSettings)
    sites: tuple[SiteSettings, ...] = ()
    default_site: str = ""  # site for addresses in no configured subnet; "" = they get no peers
    proxies: tuple[str, ...] = ()  # addresses/subnets whose X-Forwarded-For and ip= are believed
    limits: LimitSettings = field(default_factory=LimitSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    page: PageSettings = field(default_factory=PageSettings)
    # The URL agents reach this server at (their ``repository``), e.g. "https://sms-hq:6969":
    # published torrents must announce to <public_url>/announce and nowhere else. "" = the
    # URL each publish request was sent to (scheme and Host); set it behind a proxy.
    public_url: str = ""
    # The server's log, rotated at 10 MiB with 3 old files kept; unset = stderr only.
    log_file: Path | None = None

    def __post_init__(self) -> None:
        if self.public_url:
            check_base_url(self.public_url)
            if self.listen.tls_cert is not None and self.public_url.lower().startswith("http:"):
                raise ValueError("public_url must be https:// when listen.tls_cert is set")

    def trusted_keys(self) -> tuple[bytes, ...]:
        """Raw 32-byte keys from ``public_keys`` and ``public_key_files``; ConfigError if malformed."""
        return trusted_keys(self.public_keys, self.public_key_files)

    def token(self) -> str:
        """The admin token (file wins over the inline value); '' disables the admin API."""
        if self.admin_token_file is not None:
            try:
                return self.admin_token_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read admin_token_file {self.admin_token_file}: {exc.strerror}") from None
        return self.admin_token.strip()


def load_server_settings(path: Path | str | None) -> ServerSettings:
    return load_settings(ServerSettings, path)
