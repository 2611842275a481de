"""The console's HTML pages: they read the console's JSON views (``pages`` shapes them,
``templates/`` renders them); a store that is down is a page saying so."""

from __future__ import annotations

import functools
import logging

from aiohttp import web

from p2pdist.metainfo import normalize_package_id
from p2pdist.tracker import prestage_api, templating
from p2pdist.tracker.appstate import STATE, Handler, ServerState, configured_sites
from p2pdist.tracker.console import site_list
from p2pdist.tracker.pages import index_page, package_page, site_page, utc
from p2pdist.tracker.routes_console import site_of, snapshot
from p2pdist.tracker.store import StoreError

log = logging.getLogger("p2pdist.tracker")


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
    view, records = await site_of(state, site)
    if view is None:
        return missing(request, f"No site {site!r} is configured or has reported.")
    return templating.render(request, "site.html", page_context(state, **site_page(view, records)))
