"""The Python client of the agent's local control API (docs/control-api.md).

Used by the wrapper, ``p2pdist status`` and scripts. Each call opens its own short-lived HTTP
connection (a Unix socket on POSIX, 127.0.0.1 with a bearer token on Windows), so a client
object holds no resources and needs no closing. This module stays light on purpose: the wrapper
imports it and nothing else of the agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import platformdirs

from p2pdist.errors import LocalError, P2pdistError

DEFAULT_SOCKET = "/run/p2pdist/agent.sock"
DEFAULT_PORT = 7881
# The Host header sent over the Unix socket (there is no host); the agent accepts it there.
SOCKET_HOST = "p2pdist-agent"
TOKEN_FILE_NAME = "control.token"


def default_state_dir() -> Path:
    """``%ProgramData%\\p2pdist`` on Windows, ``/var/lib/p2pdist`` on Linux."""
    site_state = getattr(platformdirs, "site_state_path", platformdirs.site_data_path)
    return Path(site_state("p2pdist", appauthor=False))


def default_token_file() -> Path:
    return default_state_dir() / TOKEN_FILE_NAME


def default_address() -> str:
    if sys.platform == "win32":
        return f"http://127.0.0.1:{DEFAULT_PORT}"
    return f"unix:{DEFAULT_SOCKET}"


class AgentUnavailable(LocalError):
    """No agent answers at the control address (no socket, refused, timed out, no access)."""


class ControlError(P2pdistError):
    """The agent answered with an error; ``status`` is the HTTP status, ``message`` its reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"agent: {message} (HTTP {status})")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PackageStatus:
    """One package version as the agent sees it; times are ISO-8601 UTC strings."""

    package_id: str
    version: int | None = None
    info_hash: str | None = None
    name: str = ""
    state: str = "fetching-torrent"  # fetching-torrent | checking | downloading | complete | error
    progress: float = 0.0
    size: int = 0
    bytes_from_peers: int = 0
    bytes_from_webseed: int = 0
    uploaded: int = 0
    peers: int = 0
    download_rate: int = 0
    upload_rate: int = 0
    path: str | None = None
    error: str | None = None
    tracker_error: str | None = None
    last_advertised: str = ""
    completed_at: str | None = None
    seed_until: str = ""

    @property
    def complete(self) -> bool:
        return self.state == "complete" and self.path is not None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: object) -> PackageStatus:
        """Lenient on extra keys (a newer agent), strict on the one that must be there."""
        if not isinstance(value, dict) or not isinstance(value.get("package_id"), str):
            raise ControlError(502, "malformed package status from the agent")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in names})


class ControlClient:
    """Async client; ``address`` is ``unix:/path`` or ``http://127.0.0.1:PORT``."""

    def __init__(self, address: str | None = None, *, token_file: Path | str | None = None, timeout: float = 10.0) -> None:
        self.address = address or default_address()
        self.timeout = timeout
        if self.address.startswith("unix:"):
            self.socket_path: str | None = self.address[len("unix:") :]
            if not self.socket_path:
                raise AgentUnavailable("control address 'unix:' names no socket")
            self.base_url = f"http://{SOCKET_HOST}"
            self.token_file = Path(token_file) if token_file is not None else None
        elif self.address.startswith(("http://", "https://")):
            self.socket_path = None
            self.base_url = self.address.rstrip("/")
            self.token_file = Path(token_file) if token_file is not None else default_token_file()
        else:
            raise AgentUnavailable(f"control address {self.address!r} is neither unix:/path nor http://127.0.0.1:PORT")

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    # ------------------------------------------------------------------ the API

    async def ensure(self, package_id: str, version: int | None = None) -> PackageStatus:
        body = {} if version is None else {"version": version}
        return PackageStatus.from_json(await self._call("POST", f"/v1/packages/{package_id}/ensure", body))

    async def status(self, package_id: str) -> PackageStatus:
        return PackageStatus.from_json(await self._call("GET", f"/v1/packages/{package_id}"))

    async def list(self) -> list[PackageStatus]:
        answer = await self._call("GET", "/v1/packages")
        items = answer.get("packages") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise ControlError(502, "malformed package list from the agent")
        return [PackageStatus.from_json(item) for item in items]

    async def remove(self, package_id: str) -> None:
        await self._call("DELETE", f"/v1/packages/{package_id}")

    async def verify(self, package_id: str) -> PackageStatus:
        return PackageStatus.from_json(await self._call("POST", f"/v1/packages/{package_id}/verify"))

    async def acquire(self, package_id: str, pid: int) -> str:
        answer = await self._call("POST", f"/v1/packages/{package_id}/leases", {"pid": pid})
        lease = answer.get("lease") if isinstance(answer, dict) else None
        if not isinstance(lease, str):
            raise ControlError(502, "malformed lease answer from the agent")
        return lease

    async def release(self, lease: str) -> None:
        await self._call("DELETE", f"/v1/leases/{lease}")

    async def metrics(self) -> str:
        return await self._call("GET", "/metrics", text=True)

    # ------------------------------------------------------------------ transport

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except FileNotFoundError:
                raise AgentUnavailable(f"no control token at {self.token_file}: is the agent running?") from None
            except PermissionError:
                raise AgentUnavailable(f"cannot read the control token {self.token_file}: run as an administrator") from None
            except OSError as exc:
                raise AgentUnavailable(f"cannot read the control token {self.token_file}: {exc.strerror}") from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _connector(self) -> aiohttp.BaseConnector:
        if self.socket_path is not None:
            return aiohttp.UnixConnector(path=self.socket_path, force_close=True)
        return aiohttp.TCPConnector(force_close=True)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, text: bool = False) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        where = self.address
        try:
            async with aiohttp.ClientSession(connector=self._connector(), timeout=timeout) as session:
                async with session.request(method, self.base_url + path, json=body, headers=self._headers()) as reply:
                    payload = await reply.read()
                    status = reply.status
        except asyncio.TimeoutError:
            raise AgentUnavailable(f"the agent at {where} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            cause = exc.os_error
            if isinstance(cause, PermissionError):
                raise AgentUnavailable(f"no permission to use the agent's socket {self.socket_path}: run as root") from None
            if isinstance(cause, FileNotFoundError):
                raise AgentUnavailable(f"no agent socket at {self.socket_path}: is the agent running?") from None
            raise AgentUnavailable(f"no agent at {where}: {cause.strerror or cause}") from None
        except aiohttp.ClientError as exc:
            raise AgentUnavailable(f"the agent at {where} failed to answer: {exc or type(exc).__name__}") from None
        if status >= 400:
            raise ControlError(status, _error_message(payload, status))
        if text:
            return payload.decode("utf-8", "replace")
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise ControlError(502, "the agent's answer is not JSON") from None


def _error_message(payload: bytes, status: int) -> str:
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"]
    return payload.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
