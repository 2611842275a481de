"""The repository API: publishing and retiring packages (admin token) and the torrents agents fetch.

A publish checks the torrent's signature against the trusted keys before anything is stored
(``repository.Repository``); agents fetch ``/packages/<PackageID>.torrent`` (the current
version) or ``/packages/<PackageID>/<version>.torrent``.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from p2pdist.metainfo import normalize_package_id
from p2pdist.tracker.appstate import STATE, ServerState, api, json_error, package_id_or_404, read_bounded, require_admin
from p2pdist.tracker.repository import PackageRecord, RepositoryError
from p2pdist.tracker.trust import announce_url_of

log = logging.getLogger("p2pdist.tracker")

TORRENT_TYPE = "application/x-bittorrent"


def own_announce_url(request: web.Request) -> str:
    """This server's announce URL: from ``public_url``, else as the admin reached the server."""
    public = request.app[STATE].settings.public_url
    if public:
        return announce_url_of(public)
    return announce_url_of(f"{'https' if request.secure else 'http'}://{request.host}")


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




@api
async def fetch_latest(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if not name.endswith(".torrent"):
        return json_error("not found; use /packages/<PackageID>.torrent", 404)
    package_id = package_id_or_404(name[: -len(".torrent")])
    state = request.app[STATE]
    return torrent_response(state, state.repository.find(package_id), package_id)


@api
async def fetch_version(request: web.Request) -> web.Response:
    package_id = package_id_or_404(request.match_info["package"])
    version = int(request.match_info["version"])
    state = request.app[STATE]
    return torrent_response(state, state.repository.find(package_id, version), f"{package_id} v{version}")
