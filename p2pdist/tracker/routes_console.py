"""The console's API: agents' reports, pre-staging orders, the per-package and per-site views
and ``/metrics``.

Reports are how agents learn their site's pre-staging orders: the answer carries them (agents
pull; docs/site-server.md).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from aiohttp import web

from p2pdist.tracker import metrics, prestage_api
from p2pdist.tracker.appstate import (
    STATE, Handler, ServerState, api, configured_sites, json_body, json_error, known_sites, package_id_or_404, place_of,
    read_bounded, require_admin,
)  # fmt: skip
from p2pdist.tracker.console import Console, package_sites, site_list, site_view
from p2pdist.tracker.ledger import day_of
from p2pdist.tracker.prestage import OrderError
from p2pdist.tracker.reports import ReportEntry, ReportError, parse_report
from p2pdist.tracker.repository import PackageRecord, RepositoryError
from p2pdist.tracker.service import RATE_LIMITED

log = logging.getLogger("p2pdist.tracker")


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




@api
async def package_sites_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    package_id = package_id_or_404(request.match_info["package"])
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


async def site_of(state: ServerState, site: str) -> tuple[dict[str, Any] | None, list[PackageRecord]]:
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
    view, _ = await site_of(request.app[STATE], site)
    if view is None:
        return json_error(f"no site {site!r} is configured or has reported", 404)
    return web.json_response(view)


@api
async def metrics_view(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = metrics.render(await snapshot(state), await state.store.peer_count())
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})
