"""The Python client of the agent's local control API (docs/control-api.md).

Used by the wrapper, ``p2pdist status`` and scripts. Each call opens its own short-lived HTTP
connection (a Unix socket on POSIX, 127.0.0.1 with a bearer token on Windows), so a client
object holds no resources and needs no closing. This module stays light on purpose: the wrapper
imports it and nothing else of the agent, and SMS may start the wrapper on every PC of a branch
at once, so it speaks its few lines of HTTP/1.1 over asyncio streams itself instead of importing
aiohttp (a quarter of a second of CPU per wrapper start on a busy PC). For the same reason
platformdirs is imported only to find the default token file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pdist.errors import LocalError, RemoteError

DEFAULT_SOCKET = "/run/p2pdist/agent.sock"
DEFAULT_PORT = 7881
# The Host header sent over the Unix socket (there is no host); the agent accepts it there.
SOCKET_HOST = "p2pdist-agent"
TOKEN_FILE_NAME = "control.token"
MAX_ANSWER = 8 * 1024 * 1024  # a package list of thousands of packages fits


def default_state_dir() -> Path:
    """``%ProgramData%\\p2pdist`` on Windows, ``/var/lib/p2pdist`` on Linux."""
    import platformdirs

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


class ControlError(RemoteError):
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
    error: str | None = None  # one line: why it stopped, or what keeps it from completing
    error_kind: str | None = None  # the error's p2pdist.outcomes.Problem (range-unsupported, ...)
    tracker_error: str | None = None
    in_use: bool = False  # a program runs from it (a live lease)
    unpublished_since: str | None = None  # not-published: when the repository first said so
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
            if sys.platform == "win32":
                raise AgentUnavailable("control address 'unix:...': Unix sockets are not used on Windows; use http://127.0.0.1:PORT")
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

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, text: bool = False) -> Any:
        status, payload = await self._exchange(method, path, body)
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

    async def _exchange(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        """One request on a fresh connection (``Connection: close``); the answer's status and body."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = self._headers()
        if data:
            headers["Content-Type"] = "application/json"
        host = SOCKET_HOST if self.socket_path is not None else self.base_url.split("://", 1)[1]
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        where = self.address
        try:
            async with asyncio.timeout(self.timeout):
                if self.socket_path is not None:
                    reader, writer = await asyncio.open_unix_connection(self.socket_path)
                else:
                    hostname, _, port = host.rpartition(":")
                    reader, writer = await asyncio.open_connection(hostname.strip("[]"), int(port))
                try:
                    writer.write(head.encode("latin-1") + b"\r\n" + data)
                    await writer.drain()
                    raw = await _read_to_end(reader, MAX_ANSWER)
                finally:
                    writer.close()
        except TimeoutError:
            raise AgentUnavailable(f"the agent at {where} did not answer within {self.timeout:g} s") from None
        except PermissionError:
            raise AgentUnavailable(f"no permission to use the agent's socket {self.socket_path}: run as root") from None
        except FileNotFoundError:
            raise AgentUnavailable(f"no agent socket at {self.socket_path}: is the agent running?") from None
        except OSError as exc:
            raise AgentUnavailable(f"no agent at {where}: {exc.strerror or exc}") from None
        return _parse_answer(raw, where)


async def _read_to_end(reader: asyncio.StreamReader, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await reader.read(65536):
        size += len(chunk)
        if size > limit:
            raise AgentUnavailable(f"the agent's answer is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_answer(raw: bytes, where: str) -> tuple[int, bytes]:
    """Status and body of an HTTP/1.1 answer read to the end (Content-Length or chunked)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise AgentUnavailable(f"the agent at {where} failed to answer (no HTTP answer)")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body, where)
    elif fields.get("content-length", "").isdigit():
        body = body[: int(fields["content-length"])]
    return int(parts[1]), body


def _unchunk(body: bytes, where: str) -> bytes:
    out, position = [], 0
    while True:
        end = body.find(b"\r\n", position)
        try:
            size = int(body[position:end].split(b";")[0], 16)
        except ValueError:
            raise AgentUnavailable(f"the agent at {where} sent a malformed chunked answer") from None
        if end < 0 or size == 0:
            return b"".join(out)
        start = end + 2
        out.append(body[start : start + size])
        position = start + size + 2


def _error_message(payload: bytes, status: int) -> str:
    try:
        value = json.loads(payload)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"]
    return payload.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
