"""The site server's aiohttp application: tracker, repository API, console and the status page.

This module builds the application: the state (``appstate.ServerState``, under an ``AppKey``),
the route table, and the background task that expires peers and picks up other instances'
publishes (in ``cleanup_ctx``). Handlers live by job in ``routes_repository``,
``routes_console`` and ``routes_pages``; the tracker's two are here. With the memory store
most tracker requests never reach them: the HTTP front (``front``) answers them on the same
socket and hands everything else to this application.

Tracker errors go back bencoded (clients read ``failure reason``): a malformed announce is a
400 with a bencoded body, a refusal (unpublished torrent, rate limit) a 200 with one. API errors
are JSON ``{"error": ...}`` with a fitting status. Nothing a client sends ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web

from p2pdist.outcomes import State
from p2pdist.tracker import templating
from p2pdist.tracker.appstate import STATE, ServerState, bencoded, forwarded_for, raw_query
from p2pdist.tracker.ledger import FILE as LEDGER_FILE, Ledger, SqliteLedger
from p2pdist.tracker.prestage import FILE as PRESTAGE_FILE, PrestageStore, SqlitePrestage
from p2pdist.tracker.ratelimit import RateLimiter
from p2pdist.tracker.reports import ReportEntry
from p2pdist.tracker.repository import Repository
from p2pdist.tracker.routes_console import (
    metrics_view, package_sites_view, prestage_cancel, prestage_list, prestage_order, report, site_detail_view, sites_view,
)  # fmt: skip
from p2pdist.tracker.routes_pages import index, package_page_view, site_page_view
from p2pdist.tracker.routes_repository import fetch_latest, fetch_version, list_packages, publish, retire
from p2pdist.tracker.service import TrackerService
from p2pdist.tracker.settings import ServerSettings
from p2pdist.tracker.sites import SiteMap
from p2pdist.tracker.store import MemoryPeerStore, PeerStore
from p2pdist.tracker.swarm import Tracker

__all__ = ["STATE", "ServerState", "build_app", "build_state"]

log = logging.getLogger("p2pdist.tracker")


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


# ------------------------------------------------------------------------------------ tracker


async def announce(request: web.Request) -> web.Response:
    service = request.app[STATE].service
    status, body = await service.announce(raw_query(request), request.remote or "", forwarded_for(request))
    return bencoded(body, status)


async def scrape(request: web.Request) -> web.Response:
    service = request.app[STATE].service
    status, body = await service.scrape(raw_query(request), request.remote or "", forwarded_for(request))
    return bencoded(body, status)
