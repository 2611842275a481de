"""What every handler of the site server shares: its state under the application, and the
small helpers for addresses, errors and bounded bodies.

All state lives in one ``ServerState`` under an ``AppKey``; handlers (``routes_repository``,
``routes_console``, ``routes_pages``, and the tracker's two in ``web``) only parse, call the
plain classes and render. API errors are JSON ``{"error": ...}`` with a fitting status.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from p2pdist.errors import OutputError, SignatureError
from p2pdist.httpio import read_capped
from p2pdist.metainfo import normalize_package_id
from p2pdist.tracker.ledger import Ledger
from p2pdist.tracker.prestage import PrestageStore
from p2pdist.tracker.ratelimit import RateLimiter
from p2pdist.tracker.repository import Repository, RepositoryError
from p2pdist.tracker.service import TrackerService
from p2pdist.tracker.settings import ServerSettings
from p2pdist.tracker.sites import Place, SiteMap
from p2pdist.tracker.store import PeerStore, StoreError
from p2pdist.tracker.swarm import Tracker

log = logging.getLogger("p2pdist.tracker")

BENCODE_HEADERS = {"Content-Type": "text/plain"}  # what most trackers send; clients ignore it


@dataclass
class ServerState:
    settings: ServerSettings
    sites: SiteMap
    repository: Repository
    store: PeerStore
    tracker: Tracker
    limiter: RateLimiter
    service: TrackerService
    ledger: Ledger
    prestage: PrestageStore
    token: str
    # Timestamps stored across restarts or shown to people read the wall clock; durations
    # (sweep schedule, rate limits) the monotonic one; peer stamps the store's clock.
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sweeps: int = 0  # expiry sweeps done, so a test can wait for one


STATE = web.AppKey("p2pdist_server", ServerState)


def bencoded(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=BENCODE_HEADERS)


def json_error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


def forwarded_for(request: web.Request) -> str | None:
    """Every X-Forwarded-For header, joined in order (only read when proxies are configured)."""
    if not request.app[STATE].sites.has_proxies:
        return None
    values = request.headers.getall("X-Forwarded-For", ())
    return ",".join(values) if values else None


def place_of(request: web.Request) -> Place:
    state = request.app[STATE]
    try:
        return state.sites.locate(request.remote or "", forwarded_for(request))
    except ValueError:
        raise web.HTTPBadRequest(text="unknown source address") from None


def raw_query(request: web.Request) -> bytes:
    """The query string exactly as sent (percent-escapes intact) as bytes."""
    return request.raw_path.partition("?")[2].encode("utf-8", "surrogateescape")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api(handler: Handler) -> Handler:
    """JSON errors for the repository API and the page (the tracker paths skip this wrapper)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RepositoryError as exc:
            response = json_error(str(exc), exc.status)
            if exc.status == 408:  # the rest of a trickled body is not worth waiting for
                response.force_close()
            return response
        except SignatureError as exc:
            return json_error(str(exc), 422)
        except OutputError as exc:
            log.error("%s", exc)
            return json_error(str(exc), 500)
        except StoreError as exc:
            log.warning("%s", exc)
            return json_error(str(exc), 503)

    return wrapped


def require_admin(request: web.Request) -> None:
    token = request.app[STATE].token
    if not token:
        raise web.HTTPForbidden(text=json.dumps({"error": "admin API disabled: no admin token configured"}),
                                content_type="application/json")  # fmt: skip
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise web.HTTPUnauthorized(
            text=json.dumps({"error": "admin token required (Authorization: Bearer ...)"}),
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise web.HTTPForbidden(text=json.dumps({"error": "wrong admin token"}), content_type="application/json")


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes and within ``listen.body_timeout``."""
    if request.content_length is not None and request.content_length > limit:
        raise RepositoryError(f"request body larger than {limit} bytes", 413)
    timeout = request.app[STATE].settings.listen.body_timeout
    try:
        async with asyncio.timeout(timeout):
            body = await read_capped(request.content, limit)
    except TimeoutError:
        raise RepositoryError(f"request body not received within {timeout:g} s", 408) from None
    if body is None:
        raise RepositoryError(f"request body larger than {limit} bytes", 413)
    return body


async def json_body(request: web.Request, *, required: bool) -> dict[str, object]:
    body = await read_bounded(request, 16384)
    if not body.strip():
        if required:
            raise RepositoryError('body must be JSON like {"sites": ["Lyon"], "at": "2026-12-03T20:00:00Z"}')
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        raise RepositoryError("body is not JSON") from None
    if not isinstance(payload, dict):
        raise RepositoryError("body must be a JSON object")
    return payload


def package_id_or_404(text: str) -> str:
    try:
        return normalize_package_id(text)
    except ValueError as exc:
        raise RepositoryError(str(exc), 404) from None


def known_sites(state: ServerState) -> list[str]:
    names = [site.name for site in state.settings.sites]
    if state.settings.default_site and state.settings.default_site not in names:
        names.append(state.settings.default_site)
    return names


def configured_sites(state: ServerState) -> dict[str, dict[str, object]]:
    return {
        site.name: {"configured": True, "subnets": list(site.subnets), "locations": [l.name for l in site.locations],
                    "isolate_locations": site.isolate_locations}  # fmt: skip
        for site in state.settings.sites
    }
