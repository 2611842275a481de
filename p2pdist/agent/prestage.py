"""Pre-staging orders as an agent hears them: read from the site server's report answer.

The server never connects to a PC: each report (an agent with nothing to say still checks in
at its report interval) is answered with the standing orders of the PC's site whose time has
come, and with the orders cancelled lately (docs/site-server.md, "Pre-staging"). This module
reads that answer, bounded and checked, and acts on it (``Agent.prestage``).

Each order not acted on before is an ensure of that exact version whose advertisement is the
order's time, so retention counts from the order; a package already cached is left as it is.
Orders acted on are kept in SQLite, so an order heard again, or after a restart, does nothing
more. A cancelled order removes the package it fetched, unless a program runs from it or asked
for it since (then it stays, under the usual retention).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from p2pdist.agent import retention
from p2pdist.agent.packages import ERROR
from p2pdist.agent.state import PrestagedRow
from p2pdist.metainfo import normalize_package_id

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")

MAX_ORDERS = 32  # the server sends at most this many of each; more is ignored
_HEX40 = re.compile(r"\A[0-9a-f]{40}\Z")


@dataclass(frozen=True)
class StageOrder:
    order_id: str  # the server's name for the order; with the version, what makes it "seen before"
    package_id: str
    version: int
    info_hash: str
    since: float  # when the order took effect: the package's retention counts from here


def _order(item: object) -> StageOrder | None:
    if not isinstance(item, dict):
        return None
    try:
        order_id, version, info_hash = item["order"], item["version"], item["info_hash"]
        package_id = normalize_package_id(item["package"])
        since = datetime.fromisoformat(item["since"]).timestamp()
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not (isinstance(order_id, str) and 0 < len(order_id) <= 200):
        return None
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31:
        return None
    if not isinstance(info_hash, str) or not _HEX40.match(info_hash):
        return None
    return StageOrder(order_id, package_id, version, info_hash, since)


def read_answer(payload: Any) -> tuple[list[StageOrder] | None, list[str], str | None]:
    """(orders, ids of cancelled orders, the lists' tag) of a report answer; malformed items are
    skipped. Orders None: the answer left the lists out, as they still have the tag sent."""
    if not isinstance(payload, dict):
        return None, [], None
    tag = payload.get("orders_tag")
    tag = tag if isinstance(tag, str) and len(tag) <= 64 else None
    if "prestage" not in payload and "cancelled" not in payload:
        return None, [], tag
    raw = payload.get("prestage")
    orders = [o for o in map(_order, raw[:MAX_ORDERS] if isinstance(raw, list) else []) if o is not None]
    gone = payload.get("cancelled")
    cancelled = [
        item["order"] for item in (gone[:MAX_ORDERS] if isinstance(gone, list) else [])
        if isinstance(item, dict) and isinstance(item.get("order"), str) and len(item["order"]) <= 200
    ]  # fmt: skip
    return orders, cancelled, tag


def heard(agent: Agent, answer: object) -> None:
    """A report answer: act on its pre-staging orders if any is new (in the background)."""
    orders, cancelled, tag = read_answer(answer)
    if orders is None:
        return  # the lists are unchanged since the tag we sent: nothing to do
    new = [o for o in orders if (o.order_id, o.version) not in agent.prestaged]
    gone = [order for order in cancelled if any(key[0] == order for key in agent.prestaged)]
    if not new and not gone:
        _orders_done(agent, tag)
    elif not agent.closing and not agent.staging.locked():
        agent.spawn(agent.prestage(new, gone, tag))  # a round already running: the next check-in brings them again


def _orders_done(agent: Agent, tag: str | None) -> None:
    if agent.reporter is not None:
        agent.reporter.orders_tag = tag


async def prestage(agent: Agent, orders: list[StageOrder], cancelled: list[str], tag: str | None = None) -> None:
    """``Agent.prestage``: each order once, cancellations first; one round at a time."""
    async with agent.staging:
        failed = False
        for order_id in cancelled:
            await _cancel_order(agent, order_id)
        for order in orders:
            if (order.order_id, order.version) in agent.prestaged or agent.closing:
                continue
            had = order.info_hash in agent.packages
            if not had:
                status = await agent.ensure(order.package_id, order.version, advertised_at=order.since)
                if status.state == ERROR:
                    log.warning("pre-staging %s v%d: %s (trying again at the next check-in)", order.package_id, order.version, status.error)
                    failed = True
                    continue
                log.info("pre-staging %s v%d (order %s)", order.package_id, order.version, order.order_id)
            row = PrestagedRow(order.order_id, order.version, order.package_id, order.info_hash, order.since, not had)
            agent.prestaged[(row.order_id, row.version)] = row
            if agent.state is not None:
                with contextlib.suppress(sqlite3.Error):
                    agent.state.note_prestaged(row)
        if not failed and not agent.closing:
            _orders_done(agent, tag)


async def _cancel_order(agent: Agent, order_id: str) -> None:
    rows = [row for key, row in agent.prestaged.items() if key[0] == order_id]
    for row in rows:
        package = agent.packages.get(row.info_hash)
        if row.added and package is not None:
            async with agent.id_lock(row.package_id):
                if package.key in agent.in_use():
                    log.info("%s v%d: pre-staging cancelled; kept, a program runs from it", row.package_id, row.version)
                elif package.row.last_advertised > row.since:
                    log.info("%s v%d: pre-staging cancelled; kept, a program asked for it", row.package_id, row.version)
                elif not package.removed:
                    await retention.remove_package(agent, package, "pre-staging cancelled")
        agent.prestaged.pop((row.order_id, row.version), None)
    if rows and agent.state is not None:
        with contextlib.suppress(sqlite3.Error):
            agent.state.forget_prestaged(order_id)
