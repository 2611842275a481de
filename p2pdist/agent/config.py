"""The agent's settings (``agent.toml``), as frozen dataclasses with embedded defaults.

Every directory defaults to the platform's machine-wide place (platformdirs site directories:
``C:\\ProgramData\\p2pdist`` on Windows, ``/var/lib``, ``/var/cache`` and ``/var/log`` on
Linux), never inside the SMS client cache. The ``[engine]`` table is the engine's own
``EngineSettings`` (listen address, connection and rate limits), so every engine knob is
reachable without a second list of names here. docs/agent.md shows a complete example.
"""

from __future__ import annotations

import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from p2pdist.control.schema import TOKEN_FILE_NAME, default_address, default_state_dir
from p2pdist.engine.settings import EngineSettings
from p2pdist.config import ConfigError, load_settings
from p2pdist.metainfo.signing import trusted_keys

DAY = 86400.0


def default_cache_dir() -> Path:
    return Path(platformdirs.site_cache_path("p2pdist", appauthor=False))


def default_log_file() -> Path:
    if sys.platform == "win32":  # one log folder with the wrapper's: %ProgramData%\p2pdist\logs
        return default_state_dir() / "logs" / "agent.log"
    return Path(platformdirs.site_log_path("p2pdist", appauthor=False)) / "agent.log"


@dataclass(frozen=True)
class ControlSettings:
    """Where the local control API listens; see docs/control-api.md."""

    # "unix:/path" (POSIX: a 0600 socket) or "http://127.0.0.1:PORT" (loopback + bearer token).
    address: str = field(default_factory=default_address)
    # Token file for the http address (default: <state_dir>/control.token); written at start.
    token_file: Path | None = None

    def __post_init__(self) -> None:
        if self.address.startswith("unix:"):
            if sys.platform == "win32":
                raise ValueError("control.address: Unix sockets are not used on Windows; use http://127.0.0.1:PORT")
            if not self.address[5:]:
                raise ValueError("control.address: 'unix:' needs a socket path")
            return
        host, port = self.tcp_endpoint()
        if host not in ("localhost",):
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(f"control.address: {host} is not a loopback address; the control API is local only")
        if not 0 <= port < 65536:
            raise ValueError("control.address: port must be 0-65535 (0: any free port)")

    @property
    def is_unix(self) -> bool:
        return self.address.startswith("unix:")

    @property
    def socket_path(self) -> Path:
        return Path(self.address[5:])

    def tcp_endpoint(self) -> tuple[str, int]:
        """(host, port) of an ``http://HOST:PORT`` address."""
        if not self.address.startswith("http://"):
            raise ValueError(f"control.address {self.address!r} must be unix:/path or http://127.0.0.1:PORT")
        rest = self.address[len("http://") :].rstrip("/")
        host, sep, port_text = rest.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"control.address {self.address!r} needs an explicit port")
        return host.strip("[]"), int(port_text)


@dataclass(frozen=True)
class CacheSettings:
    # Seeding window: a package is seeded while advertised and at least this long afterwards.
    min_seed_days: float = 3.0
    # Kept this long after the last advertisement (0 = exactly min_seed_days); packages between
    # min_seed_days and keep_days are the first the size limit evicts.
    keep_days: float = 0.0
    max_bytes: int = 0  # size limit of the package cache; 0 = no limit
    cleanup_interval: float = 600.0

    def __post_init__(self) -> None:
        if self.min_seed_days < 0 or self.keep_days < 0 or self.max_bytes < 0:
            raise ValueError("cache.min_seed_days, cache.keep_days and cache.max_bytes must not be negative")
        if self.cleanup_interval <= 0:
            raise ValueError("cache.cleanup_interval must be positive")

    @property
    def min_seed_seconds(self) -> float:
        return self.min_seed_days * DAY

    @property
    def keep_seconds(self) -> float:
        return max(self.keep_days, self.min_seed_days) * DAY


@dataclass(frozen=True)
class AgentSettings:
    repository: str = "http://localhost:6969"  # the site server (tracker + signed torrents)
    public_keys: tuple[str, ...] = ()  # trusted repository keys: 64 hex digits or PEM
    public_key_files: tuple[Path, ...] = ()
    cache_dir: Path = field(default_factory=default_cache_dir)  # package data: <info-hash>/<name>
    state_dir: Path = field(default_factory=default_state_dir)  # SQLite, .torrent files, resume data
    log_file: Path | None = field(default_factory=default_log_file)
    log_level: str = "info"
    engine: EngineSettings = field(default_factory=EngineSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    # A package whose download stopped on an error (disk full) is restarted this often.
    retry_interval: float = 60.0
    # Package states and totals to the site server's console: what changed, every interval;
    # everything, every refresh (so it can tell a PC still there from one gone); a change of
    # state or problem (complete, range-unsupported) within debounce seconds.
    report_interval: float = 300.0
    report_refresh: float = 3600.0
    report_debounce: float = 2.0
    flush_interval: float = 10.0  # byte counters to SQLite
    fetch_timeout: float = 30.0  # getting a .torrent from the repository
    max_torrent_bytes: int = 16 * 1024 * 1024
    # At most this long before the web seed helps: the wait ends as soon as the tracker answered
    # and the peers it named are connected and described (a LAN needs well under a second).
    web_seed_grace: float = 10.0
    startup_concurrency: int = 2  # packages re-checked at once after a restart
    # A verify before a run answers within this many seconds: done, or "checking" with its
    # progress (the check goes on; the next call joins it), so SMS gets its retry code in time.
    verify_answer: float = 3.0

    def __post_init__(self) -> None:
        if not self.repository.startswith(("http://", "https://")):
            raise ValueError("repository must be an http:// or https:// URL of the site server")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be debug, info, warning or error")
        for name in ("retry_interval", "report_interval", "report_refresh", "report_debounce", "flush_interval", "fetch_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.verify_answer < 0:
            raise ValueError("verify_answer must be zero or more")
        if self.startup_concurrency < 1 or self.max_torrent_bytes < 1024:
            raise ValueError("startup_concurrency must be >= 1 and max_torrent_bytes >= 1024")

    @property
    def repository_url(self) -> str:
        return self.repository.rstrip("/")

    @property
    def token_file(self) -> Path:
        return self.control.token_file or self.state_dir / TOKEN_FILE_NAME

    def trusted_keys(self) -> tuple[bytes, ...]:
        """Raw 32-byte keys from ``public_keys`` and ``public_key_files``; ConfigError if malformed."""
        return trusted_keys(self.public_keys, self.public_key_files)


def load_agent_settings(path: Path | str | None) -> AgentSettings:
    settings = load_settings(AgentSettings, path)
    if not settings.trusted_keys():
        raise ConfigError("no repository public key configured (public_keys or public_key_files): every torrent would be refused")
    return settings
