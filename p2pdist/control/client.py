"""The Python client of the agent's local control API (docs/control-api.md).

Used by the wrapper, ``p2pdist status`` and scripts. Each call opens its own short-lived HTTP
connection (a Unix socket on POSIX, 127.0.0.1 with a bearer token on Windows), so a client
object holds no resources and needs no closing. This module stays light on purpose: the wrapper
imports it (and the schema) and nothing else of the agent, and SMS may start the wrapper on every PC of a branch
at once, so it speaks its few lines of HTTP/1.1 itself instead of importing aiohttp (a quarter
of a second of CPU per wrapper start on a busy PC): over asyncio streams (``ControlClient``) or
blocking sockets (``BlockingControlClient``, the wrapper's and ``p2pdist status``'s, which then
need not import asyncio either, nor typing or pathlib). platformdirs is imported only to find
the default token file where the platform does not say where it is.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from p2pdist.control.schema import (
    MAX_ANSWER,
    SOCKET_HOST,
    AgentTimeout,
    AgentUnavailable,
    PackageStatus,
    decode_answer,
    default_address,
    default_token_file,
    lease_of,
    package_list,
)

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    import asyncio
    from typing import Any


class _Endpoint:
    """The agent's control address and credentials, and the request both clients send."""

    def __init__(self, address: str | None = None, *, token_file: os.PathLike[str] | str | None = None, timeout: float = 10.0) -> None:
        self.address = address or default_address()
        self.timeout = timeout
        if self.address.startswith("unix:"):
            if sys.platform == "win32":
                raise AgentUnavailable("control address 'unix:...': Unix sockets are not used on Windows; use http://127.0.0.1:PORT")
            self.socket_path: str | None = self.address[len("unix:") :]
            if not self.socket_path:
                raise AgentUnavailable("control address 'unix:' names no socket")
            self.base_url = f"http://{SOCKET_HOST}"
            self.token_file: str | None = os.fspath(token_file) if token_file is not None else None
        elif self.address.startswith(("http://", "https://")):
            self.socket_path = None
            self.base_url = self.address.rstrip("/")
            self.token_file = os.fspath(token_file if token_file is not None else default_token_file())
        else:
            raise AgentUnavailable(f"control address {self.address!r} is neither unix:/path nor http://127.0.0.1:PORT")

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token_file is not None:
            try:
                with open(self.token_file, encoding="utf-8") as handle:
                    token = handle.read().strip()
            except FileNotFoundError:
                raise AgentUnavailable(f"no control token at {self.token_file}: is the agent running?") from None
            except PermissionError:
                raise AgentUnavailable(f"cannot read the control token {self.token_file}: run as an administrator") from None
            except OSError as exc:
                raise AgentUnavailable(f"cannot read the control token {self.token_file}: {exc.strerror}") from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @property
    def _host(self) -> str:
        return SOCKET_HOST if self.socket_path is not None else self.base_url.split("://", 1)[1]

    def _tcp_address(self) -> tuple[str, int]:
        hostname, _, port = self._host.rpartition(":")
        return hostname.strip("[]"), int(port)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> bytes:
        """The whole request, for a fresh connection (``Connection: close``)."""
        data = b"" if body is None else json.dumps(body).encode()
        headers = self._headers()
        if data:
            headers["Content-Type"] = "application/json"
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return head.encode("latin-1") + b"\r\n" + data

    def _unavailable(self, exc: OSError) -> AgentUnavailable:
        """What a failed exchange says (TimeoutError is an OSError too)."""
        if isinstance(exc, TimeoutError):
            return AgentTimeout(f"the agent at {self.address} did not answer within {self.timeout:g} s")
        if isinstance(exc, PermissionError):
            return AgentUnavailable(f"no permission to use the agent's socket {self.socket_path}: run as root")
        if isinstance(exc, FileNotFoundError):
            return AgentUnavailable(f"no agent socket at {self.socket_path}: is the agent running?")
        return AgentUnavailable(f"no agent at {self.address}: {exc.strerror or exc}")


class ControlClient(_Endpoint):
    """Async client; ``address`` is ``unix:/path`` or ``http://127.0.0.1:PORT``."""

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
        return package_list(await self._call("GET", "/v1/packages"))

    async def remove(self, package_id: str) -> None:
        await self._call("DELETE", f"/v1/packages/{package_id}")

    async def verify(self, package_id: str) -> PackageStatus:
        return PackageStatus.from_json(await self._call("POST", f"/v1/packages/{package_id}/verify"))

    async def acquire(self, package_id: str, pid: int) -> str:
        return lease_of(await self._call("POST", f"/v1/packages/{package_id}/leases", {"pid": pid}))

    async def release(self, lease: str) -> None:
        await self._call("DELETE", f"/v1/leases/{lease}")

    async def metrics(self) -> str:
        return await self._call("GET", "/metrics", text=True)

    # ------------------------------------------------------------------ transport

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, text: bool = False) -> Any:
        return decode_answer(*await self._exchange(method, path, body), text=text)

    async def _exchange(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        """One request on a fresh connection; the answer's status and body."""
        import asyncio  # here, not above: the wrapper and `p2pdist status` use the blocking client

        request = self._request(method, path, body)
        try:
            async with asyncio.timeout(self.timeout):
                if self.socket_path is not None:
                    reader, writer = await asyncio.open_unix_connection(self.socket_path)
                else:
                    reader, writer = await asyncio.open_connection(*self._tcp_address())
                try:
                    writer.write(request)
                    await writer.drain()
                    raw = await _read_to_end(reader, MAX_ANSWER)
                finally:
                    writer.close()
        except OSError as exc:
            raise self._unavailable(exc) from None
        return _parse_answer(raw, self.address)


class BlockingControlClient(_Endpoint):
    """The same calls on blocking sockets, each bounded by ``timeout`` (which a caller may
    change between calls). For the wrapper and ``p2pdist status``, which start, ask once or
    twice and exit: importing asyncio would be most of what they cost (SMS may start the
    wrapper on every PC of a branch at once)."""

    def ensure(self, package_id: str, version: int | None = None) -> PackageStatus:
        body = {} if version is None else {"version": version}
        return PackageStatus.from_json(self._call("POST", f"/v1/packages/{package_id}/ensure", body))

    def status(self, package_id: str) -> PackageStatus:
        return PackageStatus.from_json(self._call("GET", f"/v1/packages/{package_id}"))

    def list(self) -> list[PackageStatus]:
        return package_list(self._call("GET", "/v1/packages"))

    def verify(self, package_id: str) -> PackageStatus:
        return PackageStatus.from_json(self._call("POST", f"/v1/packages/{package_id}/verify"))

    def acquire(self, package_id: str, pid: int) -> str:
        return lease_of(self._call("POST", f"/v1/packages/{package_id}/leases", {"pid": pid}))

    def release(self, lease: str) -> None:
        self._call("DELETE", f"/v1/leases/{lease}")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return decode_answer(*self._exchange(method, path, body))

    def _exchange(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        request = self._request(method, path, body)
        deadline = time.monotonic() + self.timeout
        try:
            if self.socket_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(self.timeout)
                    sock.connect(self.socket_path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection(self._tcp_address(), timeout=self.timeout)
            with sock:
                sock.sendall(request)
                chunks, size = [], 0
                while True:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        raise AgentUnavailable(f"the agent's answer is larger than {MAX_ANSWER} bytes")
                    chunks.append(chunk)
        except OSError as exc:
            raise self._unavailable(exc) from None
        return _parse_answer(b"".join(chunks), self.address)


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
    out: list[bytes] = []
    position = 0
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
