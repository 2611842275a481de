"""Pre-staging orders as an agent hears them: read from the site server's report answer.

The server never connects to a PC: each report (an agent with nothing to say still checks in
at its report interval) is answered with the standing orders of the PC's site whose time has
come, and with the orders cancelled lately (docs/site-server.md, "Pre-staging"). This module
only reads that answer, bounded and checked; the daemon acts on it (``Agent.prestage``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from p2pdist.metainfo import normalize_package_id

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
