"""The site server's aiohttp application: tracker, repository API, console and the status page.

Handlers only parse, call the plain classes (``service.TrackerService`` for the tracker,
``repository.Repository``) and render. All state lives in one ``ServerState`` under an
``AppKey``; the background task that expires peers and picks up other instances' publishes
runs in ``cleanup_ctx``. With the memory store most tracker requests never reach the handlers
here: the HTTP front (``front``) answers them on the same socket and hands everything else to
this application.

Tracker errors go back bencoded (clients read ``failure reason``): a malformed announce is a
400 with a bencoded body, a refusal (unpublished torrent, rate limit) a 200 with one. API errors
are JSON ``{"error": ...}`` with a fitting status. Nothing a client sends ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from p2pdist.httpio import read_capped
from p2pdist.errors import OutputError, SignatureError
from p2pdist.metainfo import normalize_package_id
from p2pdist.outcomes import State
from p2pdist.tracker import metrics, templating
from p2pdist.tracker.console import Console, package_sites, site_list, site_view
from p2pdist.tracker.ledger import FILE as LEDGER_FILE, Ledger, SqliteLedger, day_of
from p2pdist.tracker.pages import index_page, package_page, site_page, utc
from p2pdist.tracker import prestage_api
from p2pdist.tracker.prestage import FILE as PRESTAGE_FILE, OrderError, PrestageStore, SqlitePrestage
from p2pdist.tracker.ratelimit import RateLimiter
from p2pdist.tracker.reports import ReportEntry, ReportError, parse_report
from p2pdist.tracker.repository import PackageRecord, Repository, RepositoryError
from p2pdist.tracker.service import RATE_LIMITED, TrackerService
from p2pdist.tracker.settings import ServerSettings
from p2pdist.tracker.sites import Place, SiteMap
from p2pdist.tracker.store import MemoryPeerStore, PeerStore, StoreError
from p2pdist.tracker.swarm import Tracker
from p2pdist.tracker.trust import announce_url_of

log = logging.getLogger("p2pdist.tracker")

BENCODE_HEADERS = {"Content-Type": "text/plain"}  # what most trackers send; clients ignore it
TORRENT_TYPE = "application/x-bittorrent"


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


def make_store(settings: ServerSettings) -> PeerStore:
    if settings.store.backend == "redis":
        from p2pdist.tracker.redis_store import RedisPeerStore

        return RedisPeerStore.from_url(settings.store.redis_url, settings.store.key_prefix)
    return MemoryPeerStore()


def make_ledger(settings: ServerSettings, store: PeerStore) -> Ledger:
    """The console's ledger beside the peers: in Redis where they are, else SQLite in data_dir."""
    reports = settings.reports
    client = getattr(store, "client", None)
    if settings.store.backend == "redis" and client is not None:
        from p2pdist.tracker.redis_ledger import RedisLedger

        return RedisLedger(
            client, settings.store.key_prefix + "console:",
            seen_days=reports.seen_days, history_days=reports.history_days, unknown_per_address=reports.unknown_per_address,
        )  # fmt: skip
    return SqliteLedger(
        settings.data_dir / LEDGER_FILE,
        seen_days=reports.seen_days, history_days=reports.history_days, unknown_per_address=reports.unknown_per_address,
    )  # fmt: skip


def make_prestage(settings: ServerSettings, store: PeerStore) -> PrestageStore:
    """The pre-staging orders beside the peers: in Redis where they are, else SQLite in data_dir."""
    client = getattr(store, "client", None)
    if settings.store.backend == "redis" and client is not None:
        from p2pdist.tracker.redis_prestage import RedisPrestage

        return RedisPrestage(client, settings.store.key_prefix + "prestage:")
    return SqlitePrestage(settings.data_dir / PRESTAGE_FILE)


def build_state(settings: ServerSettings, store: PeerStore | None = None) -> ServerState:
    sites = SiteMap(settings.sites, settings.default_site, settings.proxies)
    repository = Repository(settings.data_dir, settings.trusted_keys())
    store = store if store is not None else make_store(settings)
    tracker = Tracker(
        store,
        settings.tracker,
        repository.is_tracked,
        sites.seeds,
        settings.limits.peers_per_address,
        isolated_sites=frozenset(site.name for site in settings.sites if site.isolate_locations),
        networks=sites.networks,
    )
    limits = settings.limits
    limiter = RateLimiter(limits.announce_rate, limits.announce_burst, limits.max_tracked_addresses)
    service = TrackerService(tracker, sites, limiter, time.monotonic, store.clock)
    return ServerState(settings, sites, repository, store, tracker, limiter, service, make_ledger(settings, store),
                       make_prestage(settings, store), settings.token())  # fmt: skip


def build_app(settings: ServerSettings, store: PeerStore | None = None) -> web.Application:
    """The whole server as one application (not yet started)."""
    state = build_state(settings, store)
    app = web.Application(client_max_size=settings.limits.max_torrent_bytes)
    app[STATE] = state
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_get("/announce", announce)
    app.router.add_get("/scrape", scrape)
    templating.setup(app)
    app.router.add_get("/", index)
    app.router.add_get("/package/{package}", package_page_view)
    app.router.add_get("/site/{site}", site_page_view)
    app.router.add_get("/api/packages", list_packages)
    app.router.add_post("/api/packages", publish)
    app.router.add_post("/api/packages/{package}/retire", retire)
    app.router.add_post("/api/report", report)
    app.router.add_get("/api/prestage", prestage_list)
    app.router.add_post("/api/packages/{package}/prestage", prestage_order)
    app.router.add_delete("/api/packages/{package}/prestage", prestage_cancel)
    app.router.add_get("/api/packages/{package}/prestage", prestage_list)
    app.router.add_get("/api/packages/{package}/sites", package_sites_view)
    app.router.add_get("/api/sites", sites_view)
    app.router.add_get("/api/sites/{site}", site_detail_view)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get(r"/packages/{package}/{version:\d{1,10}}.torrent", fetch_version)
    app.router.add_get("/packages/{file}", fetch_latest)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await import_legacy_reports(state)
    task = asyncio.create_task(housekeeping(state), name="p2pdist-tracker-housekeeping")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await state.ledger.close()
        await state.prestage.close()
        await state.store.close()
        state.repository.close()


async def import_legacy_reports(state: ServerState) -> None:
    """Move the byte-only reports an older server kept in the catalogue into the ledger, once."""
    by_address: dict[tuple[str, str], list[tuple[ReportEntry, float]]] = {}
    for package, version, info_hash, address, site, peers, webseed, uploaded, completed, at in state.repository.take_legacy_reports():
        entry = ReportEntry(package, version, info_hash, State.COMPLETE if completed else State.DOWNLOADING,
                            1.0 if completed else 0.0, completed=completed, from_peers=peers, from_webseed=webseed,
                            uploaded=uploaded)  # fmt: skip
        by_address.setdefault((address, site), []).append((entry, at))
    for (address, site), entries in by_address.items():
        await state.ledger.record([e for e, _ in entries], site, address, max(at for _, at in entries))
    if by_address:
        log.info("moved the reports of %d addresses into the console ledger", len(by_address))


async def housekeeping(state: ServerState) -> None:
    """Expire peers, and follow publishes/retires made through another instance."""
    settings = state.settings.tracker
    step = min(settings.sweep_interval, settings.repository_refresh)
    next_sweep = state.monotonic() + settings.sweep_interval
    while True:
        await asyncio.sleep(step)
        try:
            before = state.repository.tracked
            if state.repository.refresh():
                for gone in before - state.repository.tracked:
                    await state.store.drop(gone)
            tick = state.monotonic()
            if tick >= next_sweep:
                next_sweep = tick + settings.sweep_interval
                removed = await state.store.sweep(state.store.clock())
                aged = await state.ledger.sweep(state.wall())
                await state.prestage.sweep(state.wall())
                state.sweeps += 1
                if removed:
                    log.info("expired %d peers", removed)
                if aged:
                    log.info("aged out %d silent agents' reports", aged)
        except Exception:  # a broken store connection must not end the housekeeping loop
            log.exception("tracker housekeeping failed; retrying")


# ------------------------------------------------------------------------------------ helpers


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


# ------------------------------------------------------------------------------------ tracker


async def announce(request: web.Request) -> web.Response:
    service = request.app[STATE].service
    status, body = await service.announce(raw_query(request), request.remote or "", forwarded_for(request))
    return bencoded(body, status)


async def scrape(request: web.Request) -> web.Response:
    service = request.app[STATE].service
    status, body = await service.scrape(raw_query(request), request.remote or "", forwarded_for(request))
    return bencoded(body, status)


# --------------------------------------------------------------------------------- repository


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


def own_announce_url(request: web.Request) -> str:
    """This server's announce URL: from ``public_url``, else as the admin reached the server."""
    public = request.app[STATE].settings.public_url
    if public:
        return announce_url_of(public)
    return announce_url_of(f"{'https' if request.secure else 'http'}://{request.host}")


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


@api
async def publish(request: web.Request) -> web.Response:
    require_admin(request)
    state = request.app[STATE]
    data = await read_bounded(request, state.settings.limits.max_torrent_bytes)
    # Synchronous on purpose: publishes are rare admin actions, and one SQLite connection owned
    # by the loop's thread needs no locking.
    record, created = state.repository.publish(data, state.wall(), announce_url=own_announce_url(request))
    log.info("published %s v%d (%s)", record.package_id, record.version, record.info_hash)
    return web.json_response({"created": created, "package": record.to_json()}, status=201 if created else 200)


@api
async def retire(request: web.Request) -> web.Response:
    require_admin(request)
    state = request.app[STATE]
    try:
        package_id = normalize_package_id(request.match_info["package"])
    except ValueError as exc:
        raise RepositoryError(str(exc), 400) from None
    version = None
    text = request.query.get("version")
    body = await read_bounded(request, 1024)
    if body.strip():
        try:
            payload = json.loads(body)
        except ValueError:
            raise RepositoryError("retire body must be JSON like {\"version\": 3}") from None
        if not isinstance(payload, dict):
            raise RepositoryError("retire body must be a JSON object")
        text = payload.get("version", text)
    if text is not None:
        if isinstance(text, bool) or not (isinstance(text, int) or (isinstance(text, str) and text.isdigit())):
            raise RepositoryError("version must be a non-negative integer")
        version = int(text)
    records = state.repository.retire(package_id, version, state.wall())
    for record in records:
        await state.store.drop(bytes.fromhex(record.info_hash))
        log.info("retired %s v%d", record.package_id, record.version)
    return web.json_response({"retired": [r.to_json() for r in records]})


@api
async def list_packages(request: web.Request) -> web.Response:
    state = request.app[STATE]
    include_retired = request.query.get("retired") in ("1", "true", "yes")
    records = state.repository.packages(include_retired)
    return web.json_response({"packages": [r.to_json() for r in records]})


def torrent_response(state: ServerState, record: PackageRecord | None, what: str) -> web.Response:
    if record is None:
        return json_error(f"no published package {what}", 404)
    return web.Response(
        body=state.repository.torrent(record),
        content_type=TORRENT_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{record.package_id}-{record.version}.torrent"'},
    )


def _package_id(text: str) -> str:
    try:
        return normalize_package_id(text)
    except ValueError as exc:
        raise RepositoryError(str(exc), 404) from None


@api
async def fetch_latest(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if not name.endswith(".torrent"):
        return json_error("not found; use /packages/<PackageID>.torrent", 404)
    package_id = _package_id(name[: -len(".torrent")])
    state = request.app[STATE]
    return torrent_response(state, state.repository.find(package_id), package_id)


@api
async def fetch_version(request: web.Request) -> web.Response:
    package_id = _package_id(request.match_info["package"])
    version = int(request.match_info["version"])
    state = request.app[STATE]
    return torrent_response(state, state.repository.find(package_id, version), f"{package_id} v{version}")


@api
async def report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_bounded(request, state.settings.limits.max_report_bytes)
    try:
        payload = json.loads(body)
    except ValueError:
        raise RepositoryError("report body is not JSON") from None
    try:
        raw_entries = parse_report(payload)
    except ReportError as exc:
        raise RepositoryError(str(exc)) from None
    place = place_of(request)
    if not state.limiter.allow(place.address, state.monotonic()):
        return json_error(RATE_LIMITED, 429)
    entries: list[ReportEntry] = []
    refused: list[dict[str, str | None]] = []
    for raw in raw_entries:
        try:
            entry = ReportEntry.from_json(raw)
        except ReportError as exc:
            refused.append({"package": raw.get("package") if isinstance(raw, dict) else None, "error": str(exc)})
            continue
        if entry.info_hash is not None:
            if state.repository.identity(entry.info_hash) != (entry.package_id, entry.version):
                refused.append({"package": entry.package_id, "error": NEVER_PUBLISHED})
                continue
        entries.append(entry)
    if refused and not entries and len(raw_entries) == 1:  # the one-package form: its error, as before
        error = str(refused[0]["error"])
        raise RepositoryError(error, 404 if error == NEVER_PUBLISHED else 400)
    for reason in await state.ledger.record(entries, place.site or "", place.address, state.wall()):
        refused.append({"package": reason.partition(":")[0], "error": reason})
    accepted = len(raw_entries) - len(refused)
    # The answer is how agents learn their site's pre-staging orders (they pull; docs/site-server.md).
    known = payload.get("orders_tag") if isinstance(payload, dict) else None
    orders = await prestage_api.answer(state.prestage, state.repository, place.site or "", state.wall(), known)
    return web.json_response({"ok": True, "site": place.site, "accepted": accepted, "refused": refused, **orders})


NEVER_PUBLISHED = "report names a torrent this repository never published"


# ---------------------------------------------------------------------------------- prestage


def known_sites(state: ServerState) -> list[str]:
    names = [site.name for site in state.settings.sites]
    if state.settings.default_site and state.settings.default_site not in names:
        names.append(state.settings.default_site)
    return names


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


def prestage_errors(handler: Handler) -> Handler:
    """An order's error as a 400 (404 for an unknown package), after the admin check."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        require_admin(request)
        try:
            return await handler(request)
        except OrderError as exc:
            return json_error(str(exc), 400)
        except LookupError as exc:
            return json_error(str(exc), 404)

    return wrapped


@api
@prestage_errors
async def prestage_order(request: web.Request) -> web.Response:
    state = request.app[STATE]
    package_id = prestage_api.package_id_of(request.match_info["package"])
    body = await json_body(request, required=True)
    now = state.wall()
    orders = prestage_api.orders_of(body, package_id, known_sites(state), now)
    record = prestage_api.check_package(state.repository, package_id, orders[0].version)
    if body.get("at") is None:  # "now" again: an order already standing keeps its time
        standing = {(o.version, o.site): o for o in await state.prestage.orders(package_id)}
        orders = [standing.get((o.version, o.site), o) for o in orders]
    result = []
    for order in orders:
        result.append({**order.to_json(), "created": await state.prestage.put(order)})
    version = "current" if orders[0].version is None else orders[0].version
    log.info("pre-staging %s v%s to %s from %s", package_id, version, ", ".join(o.site for o in orders),
             result[0]["at"])  # fmt: skip
    created = any(item["created"] for item in result)
    return web.json_response({"orders": result, "resolves_to": record.version}, status=201 if created else 200)


@api
@prestage_errors
async def prestage_cancel(request: web.Request) -> web.Response:
    state = request.app[STATE]
    package_id = prestage_api.package_id_of(request.match_info["package"])
    body = await json_body(request, required=False)
    version = prestage_api.version_of(body.get("version", request.query.get("version")))
    sites = prestage_api.sites_of(body.get("sites", request.query.getall("site", None)), known_sites(state), required=False)
    cancelled = await state.prestage.cancel(package_id, version, sites, state.wall())
    if not cancelled:
        where = f" to {', '.join(sites)}" if sites else ""
        raise LookupError(f"no pre-staging order for {package_id}{f' v{version}' if version is not None else ''}{where}")
    log.info("cancelled pre-staging of %s to %s", package_id, ", ".join(o.site for o in cancelled))
    return web.json_response({"cancelled": [o.to_json() for o in cancelled]})


@api
@prestage_errors
async def prestage_list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    text = request.match_info.get("package")
    package_id = prestage_api.package_id_of(text) if text is not None else None
    return web.json_response({"orders": [o.to_json() for o in await state.prestage.orders(package_id)]})


# ------------------------------------------------------------------------------------- console


async def snapshot(state: ServerState, package_id: str | None = None) -> Console:
    """The console's figures now: the ledger's counters and 28 days, the tracker's live peers."""
    today = day_of(state.wall())
    tallies = await state.ledger.tallies(package_id)
    history = await state.ledger.history(today - 27, today, package_id)
    live = {}
    now = state.store.clock()
    for record in state.repository.packages():
        if package_id is None or record.package_id == package_id:
            live[(record.package_id, record.version)] = await state.store.counts(bytes.fromhex(record.info_hash), now)
    return Console(tallies, history, live, today)


def configured_sites(state: ServerState) -> dict[str, dict[str, object]]:
    return {
        site.name: {"configured": True, "subnets": list(site.subnets), "locations": [l.name for l in site.locations],
                    "isolate_locations": site.isolate_locations}  # fmt: skip
        for site in state.settings.sites
    }


@api
async def package_sites_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    package_id = _package_id(request.match_info["package"])
    console = await snapshot(state, package_id)
    records = state.repository.packages(include_retired=True)
    prestaged = prestage_api.by_version(await state.prestage.orders(package_id), records)
    view = package_sites(console, package_id, records, list(configured_sites(state)), prestaged)
    if view is None:
        return json_error(f"nothing known of package {package_id}", 404)
    return web.json_response(view)


@api
async def sites_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(site_list(await snapshot(state), configured_sites(state)))


async def _site_of(state: ServerState, site: str) -> tuple[dict[str, Any] | None, list[PackageRecord]]:
    """One site's view (None if it is neither configured nor has reported), for the API and the page."""
    today = day_of(state.wall())
    records = state.repository.packages(include_retired=True)
    prestaged = prestage_api.by_version(await state.prestage.orders(site=site), records)
    view = site_view(
        await snapshot(state), site, configured_sites(state).get(site), records,
        await state.ledger.stuck(site=site), await state.ledger.history(today - 27, today), today, prestaged,
    )  # fmt: skip
    return view, records


@api
async def site_detail_view(request: web.Request) -> web.Response:
    site = request.match_info["site"]
    view, _ = await _site_of(request.app[STATE], site)
    if view is None:
        return json_error(f"no site {site!r} is configured or has reported", 404)
    return web.json_response(view)


@api
async def metrics_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = metrics.render(await snapshot(state), await state.store.peer_count())
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


# ---------------------------------------------------------------------------------------- page
# The HTML views read the console's JSON views (pages.py shapes them, templates/ renders them).


def page_context(state: ServerState, **context: object) -> dict[str, object]:
    return {"refresh": state.settings.page.refresh, "generated": utc(state.wall()), **context}


def problem(request: web.Request, heading: str, message: str, status: int) -> web.Response:
    context = page_context(request.app[STATE], heading=heading, message=message)
    return templating.render(request, "problem.html", context, status=status)


def missing(request: web.Request, message: str) -> web.Response:
    return problem(request, "Not found", message, 404)


def page(handler: Handler) -> Handler:
    """An HTML view: a store that is down is a page saying so (503), as the API says it in JSON."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreError as exc:
            log.warning("%s", exc)
            return problem(request, "Temporarily unavailable", f"{exc}; try again in a moment.", 503)

    return wrapped


@page
async def index(request: web.Request) -> web.Response:
    state = request.app[STATE]
    console, configured = await snapshot(state), configured_sites(state)
    records = state.repository.packages(include_retired=True)
    view = index_page(console, records, list(configured), site_list(console, configured))
    return templating.render(request, "index.html", page_context(state, **view))


@page
async def package_page_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        package_id = normalize_package_id(request.match_info["package"])
    except ValueError as exc:
        return missing(request, str(exc))
    records = state.repository.packages(include_retired=True)
    prestaged = prestage_api.by_version(await state.prestage.orders(package_id), records)
    view = package_page(await snapshot(state, package_id), package_id, records, list(configured_sites(state)), prestaged)
    if view is None:
        return missing(request, f"Nothing is known of package {package_id}: it was never published, and no PC asked for it.")
    return templating.render(request, "package.html", page_context(state, **view))


@page
async def site_page_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    site = request.match_info["site"]
    view, records = await _site_of(state, site)
    if view is None:
        return missing(request, f"No site {site!r} is configured or has reported.")
    return templating.render(request, "site.html", page_context(state, **site_page(view, records)))
