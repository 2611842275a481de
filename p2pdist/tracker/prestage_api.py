"""The pre-staging API's rules, apart from HTTP: what an admin may order, what an agent is told.

``web`` parses requests and calls these; they check an order against the catalogue and the
configured sites (one clear error each: unknown package, unknown site, bad time) and turn the
stored orders into the lists a report answer carries (``answer``, docs/site-server.md).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from p2pdist.metainfo import normalize_package_id
from p2pdist.tracker.prestage import CANCEL_KEEP, MAX_ORDERS, Order, OrderError, PrestageStore, due, iso, parse_time
from p2pdist.tracker.repository import PackageRecord, Repository

MAX_SITES = 200  # per request


def package_id_of(text: str) -> str:
    try:
        return normalize_package_id(text)
    except ValueError as exc:
        raise OrderError(str(exc)) from None


def version_of(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise OrderError("version must be a non-negative integer")
    version = int(value)
    if version >= 2**31:
        raise OrderError("version must be below 2**31")
    return version


def sites_of(value: object, known: list[str], *, required: bool) -> list[str] | None:
    """The named sites, each one the server knows (configured, or the default site)."""
    if value is None and not required:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise OrderError('sites must be a non-empty list of site names, e.g. {"sites": ["Lyon"]}')
    if len(value) > MAX_SITES:
        raise OrderError(f"at most {MAX_SITES} sites per request")
    unknown = [s for s in value if s not in known]
    if unknown:
        listed = ", ".join(known) if known else "none: the server has no sites configured"
        raise OrderError(f"unknown site {unknown[0]!r} (sites: {listed})")
    return sorted(set(value))


def check_package(repository: Repository, package_id: str, version: int | None) -> PackageRecord:
    """The published version an order names; an error that says why there is none."""
    record = repository.find(package_id, version)
    if record is not None:
        return record
    ever = [r for r in repository.packages(include_retired=True) if r.package_id == package_id]
    what = package_id if version is None else f"{package_id} v{version}"
    if any(r.version == version or version is None for r in ever):
        raise LookupError(f"{what} is retired: publish it again to pre-stage it")
    raise LookupError(f"unknown package {what}: publish it first")


def orders_of(body: dict[str, Any], package_id: str, known_sites: list[str], now: float) -> list[Order]:
    """The orders a POST asks for: one per site, at ``at`` (now when absent)."""
    sites = sites_of(body.get("sites"), known_sites, required=True)
    assert sites is not None
    version = version_of(body.get("version"))
    at = now if body.get("at") is None else parse_time(body.get("at"), now)
    return [Order(package_id, version, site, at, now) for site in sites]


async def answer(store: PrestageStore, repository: Repository, site: str, now: float, known: object = None) -> dict[str, Any]:
    """What a report answer carries for an agent of ``site``: the orders whose time has come,
    each resolved to a published version (an order of a retired version is left out), and the
    orders cancelled in the last ``CANCEL_KEEP`` seconds, both bounded by MAX_ORDERS, with their
    ``orders_tag``. An agent that sends the tag it holds (``known``) gets the tag alone while
    the lists have not changed: an idle check-in costs a few dozen bytes, not the orders again."""
    lists = await order_lists(store, repository, site, now)
    tag = hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()[:16]
    if known == tag:
        return {"orders_tag": tag}
    return {**lists, "orders_tag": tag}


async def order_lists(store: PrestageStore, repository: Repository, site: str, now: float) -> dict[str, list[dict[str, Any]]]:
    if not site:
        return {"prestage": [], "cancelled": []}
    orders = []
    for order in due(await store.orders(site=site), now):
        record = repository.find(order.package_id, order.version)
        if record is not None:
            orders.append({"order": order.order_id, "package": record.package_id, "version": record.version,
                           "info_hash": record.info_hash, "since": iso(order.at)})  # fmt: skip
    gone = [{"order": o.order_id, "package": o.package_id} for o in await store.cancelled(site, now - CANCEL_KEEP)]
    return {"prestage": orders[:MAX_ORDERS], "cancelled": gone[:MAX_ORDERS]}


def by_version(orders: list[Order], records: list[PackageRecord]) -> dict[tuple[str, int], dict[str, float]]:
    """(package, version) -> {site: since} of the standing orders, "the current one" resolved
    to the newest published version, for the console's JSON."""
    current: dict[str, int] = {}
    for record in records:
        if not record.retired:
            current[record.package_id] = max(current.get(record.package_id, -1), record.version)
    result: dict[tuple[str, int], dict[str, float]] = {}
    for order in orders:
        version = order.version if order.version is not None else current.get(order.package_id)
        if version is not None:
            sites = result.setdefault((order.package_id, version), {})
            sites[order.site] = min(sites.get(order.site, order.at), order.at)
    return result
