"""The agent's local control API (docs/control-api.md) as an aiohttp application.

Who may call: on POSIX whoever can open a Unix socket created with mode 0600 (root or the
service user); on Windows (or when configured) whoever can read a random token from a file only
Administrators and SYSTEM may read, sent as ``Authorization: Bearer``. Every request is checked
before any handler runs, in this order: a Host other than a loopback name (or the socket's
placeholder) is 421, which stops DNS-rebinding pages; any Origin header is 403, since browsers
must never drive the agent; a missing or wrong token is 401. A refused request changes nothing.

Handlers only parse, call the ``Agent`` and render JSON; the agent's own errors carry their
HTTP status.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from p2pdist.httpio import read_capped
from p2pdist.agent.config import ControlSettings
from p2pdist.control.schema import SOCKET_HOST
from p2pdist.agent.daemon import Agent, AgentError, BadRequest
from p2pdist.agent.metrics import CONTENT_TYPE, AgentMetrics
from p2pdist.atomicfile import write_atomically
from p2pdist.errors import LocalError

log = logging.getLogger("p2pdist.agent.control")

AGENT = web.AppKey("agent", Agent)
TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", AgentMetrics)
ALLOWED_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
MAX_BODY = 64 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(message: str, status: int, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def host_allowed(header: str | None, *, unix: bool) -> bool:
    """``localhost`` or a loopback address literal (any of 127.0.0.0/8, ``[::1]``) with any
    port, or the socket placeholder on a Unix socket: the control address may be any loopback
    address, and its clients name it. A DNS name other than localhost is refused (rebinding)."""
    if not header:
        return False
    text = header.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return False
        name, rest = text[: end + 1], text[end + 1 :]
    else:
        name, _, port = text.partition(":")
        rest = ":" + port if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and len(rest) <= 6):
        return False
    return name in ALLOWED_HOSTS or _loopback_literal(name) or (unix and name == SOCKET_HOST)


def _loopback_literal(name: str) -> bool:
    try:
        return ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name).is_loopback
    except ValueError:
        return False


def make_guard(*, unix: bool) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get(hdrs.HOST), unix=unix):
            return json_error("request refused: the control API answers only to a local Host", 421)
        if hdrs.ORIGIN in request.headers:
            return json_error("request refused: browsers may not use the control API", 403)
        token = request.app[TOKEN]
        if token:
            scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                return json_error("missing or wrong control token", 401, **{"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except AgentError as exc:
            return json_error(str(exc), exc.status)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return json_error(exc.reason, exc.status)
            raise
        except Exception as exc:
            log.exception("control request %s %s failed", request.method, request.path)
            return json_error(f"internal error: {type(exc).__name__}: {exc}", 500)

    return guard


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}``."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BadRequest(f"body larger than {MAX_BODY} bytes")
    body = await read_capped(request.content, MAX_BODY)
    if body is None:
        raise BadRequest(f"body larger than {MAX_BODY} bytes")
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        raise BadRequest("body is not JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def optional_int(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return value


async def ensure(request: web.Request) -> web.Response:
    payload = await read_json(request)
    status = await request.app[AGENT].ensure(request.match_info["package"], optional_int(payload, "version"))
    return web.json_response(status.to_json())


async def get_package(request: web.Request) -> web.Response:
    return web.json_response(request.app[AGENT].status(request.match_info["package"]).to_json())


async def list_packages(request: web.Request) -> web.Response:
    return web.json_response({"packages": [s.to_json() for s in request.app[AGENT].list()]})


async def remove_package(request: web.Request) -> web.Response:
    await request.app[AGENT].remove(request.match_info["package"])
    return web.Response(status=204)


async def verify_package(request: web.Request) -> web.Response:
    return web.json_response((await request.app[AGENT].verify(request.match_info["package"])).to_json())


async def acquire(request: web.Request) -> web.Response:
    payload = await read_json(request)
    pid = payload.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise BadRequest('body must be {"pid": N} with the process id of the command')
    lease = request.app[AGENT].acquire(request.match_info["package"], pid, optional_int(payload, "version"))
    return web.json_response({"lease": lease})


async def release(request: web.Request) -> web.Response:
    request.app[AGENT].release(request.match_info["lease"])
    return web.Response(status=204)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def build_control_app(agent: Agent, *, token: str = "", unix: bool = False) -> web.Application:
    app = web.Application(middlewares=[make_guard(unix=unix)], client_max_size=MAX_BODY)
    app[AGENT] = agent
    app[TOKEN] = token
    app[METRICS] = AgentMetrics(agent)
    app.router.add_post("/v1/packages/{package}/ensure", ensure)
    app.router.add_post("/v1/packages/{package}/verify", verify_package)
    app.router.add_post("/v1/packages/{package}/leases", acquire)
    app.router.add_get("/v1/packages/{package}", get_package)
    app.router.add_delete("/v1/packages/{package}", remove_package)
    app.router.add_get("/v1/packages", list_packages)
    app.router.add_delete("/v1/leases/{lease}", release)
    app.router.add_get("/metrics", metrics)
    return app


# ---------------------------------------------------------------------------- listening


def write_token(path: Path, token: str) -> None:
    """``token`` in a file only its owner (Administrators/SYSTEM on Windows) reads."""
    secure = restrict_windows_acl if sys.platform == "win32" else None
    try:
        write_atomically(path, token.encode() + b"\n", mode=0o600, secure=secure)
    except OSError as exc:
        raise LocalError(f"cannot write the control token {path}: {exc.strerror}") from None


def restrict_windows_acl(path: Path) -> None:  # pragma: no cover - Windows only
    """Administrators (S-1-5-32-544) and SYSTEM (S-1-5-18) only, by SID so any language works."""
    from p2pdist.agent.winacl import restrict

    try:
        restrict(path)
    except OSError as exc:
        raise LocalError(f"cannot restrict access to the control token {path}: {exc}") from None


def unix_listener(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` with mode 0600 before anyone can connect."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise LocalError(f"{path} exists and is not a socket; not replacing it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                os.unlink(path)  # stale: its agent is gone
            else:
                raise LocalError(f"another agent is already listening on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, 0o600)  # before listen(): until then every connect is refused
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise LocalError(f"control API: cannot listen on {path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class ControlServer:
    """The control API listening on its configured address until ``close()``."""

    def __init__(self, agent: Agent, settings: ControlSettings, token_file: Path) -> None:
        self.agent = agent
        self.settings = settings
        self.token_file = token_file
        self.address = settings.address
        self._runner: web.AppRunner | None = None
        self._socket_inode: int | None = None
        self._wrote_token = False

    async def start(self) -> None:
        """Listen, then write the token file: its arrival is what callers (install.cmd, the
        wrapper) take for "the API answers", so an agent that cannot listen never writes one
        and a crashed agent's old one is removed first."""
        token = ""
        if not self.settings.is_unix:
            token = secrets.token_hex(32)
            try:
                self.token_file.unlink(missing_ok=True)
            except OSError as exc:
                raise LocalError(f"cannot replace the control token {self.token_file}: {exc.strerror}") from None
        app = build_control_app(self.agent, token=token, unix=self.settings.is_unix)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        self._runner = runner
        try:
            if self.settings.is_unix:
                path = self.settings.socket_path
                sock = unix_listener(path)
                self._socket_inode = os.stat(path).st_ino
                site: web.BaseSite = web.SockSite(runner, sock)
                await site.start()
            else:
                host, port = self.settings.tcp_endpoint()
                site = web.TCPSite(runner, host, port)  # no SO_REUSEADDR: on Windows it allows port theft
                try:
                    await site.start()
                except OSError as exc:
                    raise LocalError(f"control API: cannot listen on {host}:{port}: {exc.strerror}") from None
                bound = site._server.sockets[0].getsockname()[1] if site._server else port  # type: ignore[attr-defined]  # noqa: SLF001  aiohttp types _server as AbstractServer; it is an asyncio.Server
                shown = f"[{host}]" if ":" in host else host
                self.address = f"http://{shown}:{bound}"
                self._wrote_token = True  # from here on close() removes it, written or half-written
                write_token(self.token_file, token)
        except BaseException:
            await self.close()
            raise
        log.info("control API on %s", self.address)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket_inode is not None:
            path = self.settings.socket_path
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == self._socket_inode:
                    os.unlink(path)
            self._socket_inode = None
        if self._wrote_token:
            with contextlib.suppress(OSError):
                self.token_file.unlink()
            self._wrote_token = False
