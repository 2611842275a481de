"""``p2pdist prestage``: tell the agents of some sites to fetch a package before any program runs.

The order goes to the site server (admin token, as for ``retire``); agents learn it when they
next check in. A time without a UTC offset is the admin's local time, converted here, so the
server never guesses a zone.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from p2pdist.errors import UsageError
from p2pdist.metainfo import normalize_package_id


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser(
        "prestage",
        help="have the agents of some sites fetch a package ahead of its advertisement",
        description="Pre-stage PACKAGEID to the PCs of the named sites: each agent fetches it when it next checks in "
        "(at its report interval) once TIME has come, and keeps and seeds it as if advertised.",
    )  # fmt: skip
    command.add_argument("package", metavar="PACKAGEID", nargs="?")
    command.add_argument("--version", type=int, dest="package_version", help="this SourceVersion (default: the current one, followed as new ones are published)")
    command.add_argument("--site", action="extend", nargs="+", dest="sites", metavar="NAME", help="site name(s) from site.toml")
    command.add_argument("--at", metavar="TIME", help='when to start: ISO-8601 ("2026-12-03T20:00:00Z") or local "YYYY-MM-DD HH:MM" (default: now)')
    command.add_argument("--cancel", action="store_true", help="withdraw the order (of the named sites, else of all)")
    command.add_argument("--list", action="store_true", help="list the standing orders (of PACKAGEID, else of every package)")
    command.add_argument("--server", required=True, help="site server URL")
    command.add_argument("--token-file", type=Path, help="file holding the admin token ($P2PDIST_ADMIN_TOKEN otherwise)")
    command.set_defaults(handler=run_prestage)


def utc_time(text: str) -> str:
    """``text`` as ISO-8601 UTC; a time without an offset is local time."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f'bad --at {text!r}: use ISO-8601 ("2026-12-03T20:00:00Z") or local "YYYY-MM-DD HH:MM"') from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the admin's local zone
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(order: dict[str, Any]) -> str:
    version = "current version" if order.get("version") is None else f"v{order['version']}"
    return f"{order.get('package')} {version} to {order.get('site')} from {order.get('at')} (order {order.get('order')})"


def run_prestage(args: argparse.Namespace) -> int:
    from p2pdist.tracker import client

    if sum((args.list, args.cancel)) > 1:
        raise UsageError("--list and --cancel do not go together")
    package_id = None
    if args.package is not None:
        try:
            package_id = normalize_package_id(args.package)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif not args.list:
        raise UsageError("name the PACKAGEID to pre-stage (or use --list)")
    if args.list:
        if args.sites or args.at or args.package_version is not None:
            raise UsageError("--list takes only PACKAGEID, --server and --token-file")
        token = client.read_token(args.token_file)
        orders = asyncio.run(client.prestage_orders(args.server, package_id, token)).get("orders", [])
        for order in orders:
            print(_line(order))
        if not orders:
            print("no pre-staging orders")
        return 0
    assert package_id is not None  # only --list goes without one (above)
    if args.cancel:
        if args.at:
            raise UsageError("--cancel takes no --at")
        token = client.read_token(args.token_file)
        result = asyncio.run(client.cancel_prestage(args.server, package_id, args.sites, args.package_version, token))
        for order in result.get("cancelled", []):
            print(f"cancelled: {_line(order)}")
        return 0
    if not args.sites:
        raise UsageError("name at least one --site")
    at = utc_time(args.at) if args.at else None
    token = client.read_token(args.token_file)
    result = asyncio.run(client.prestage(args.server, package_id, args.sites, args.package_version, at, token))
    for order in result.get("orders", []):
        print(f"{'pre-staging' if order.get('created') else 'already ordered'}: {_line(order)}")
    return 0
