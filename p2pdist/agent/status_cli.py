"""``p2pdist status`` (what the agent holds, as a table or JSON; ``--watch`` for a live view)
and ``p2pdist agent`` (the daemon).

One look asks the agent with the blocking client and imports no asyncio, so it starts as fast as
the wrapper; only ``--watch`` runs an event loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from p2pdist.control.client import BlockingControlClient, ControlClient
from p2pdist.control.schema import PackageStatus
from p2pdist.errors import P2pdistError, UsageError, one_line

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

BAR_WIDTH = 12
MIN_INTERVAL = 0.2  # a live view refreshes at most this often
CLEAR = "\x1b[H\x1b[2J"  # home, clear screen: every terminal p2pdist runs in (Windows 10+ too)
COLUMNS = ("PACKAGE", "VER", "STATE", "PROBLEM", "PROGRESS", "SIZE", "DOWN/s", "UP/s", "PEERS", "FROM PEERS", "FROM WEBSEED", "SEED UNTIL")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser("status", help="show the packages the local agent holds")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--agent", metavar="ADDR", default=None, help="control address: unix:/path or http://127.0.0.1:PORT")
    status.add_argument("--token-file", default=None, help="control token file (http addresses)")
    status.add_argument("--watch", action="store_true", help="a live view, refreshed every --interval; Ctrl-C ends it")
    status.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh period of --watch (default 2)")
    status.add_argument("--count", type=int, default=0, metavar="N", help="with --watch: stop after N views (default: until Ctrl-C)")
    status.set_defaults(handler=_status)

    agent = subparsers.add_parser("agent", help="run the agent daemon (as python -m p2pdist.agent)")
    agent.add_argument("--config", default=None, help="agent.toml (default: the platform's config path)")
    agent.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    agent.set_defaults(handler=_agent)


def _status(args: argparse.Namespace) -> int:
    if args.watch:
        import asyncio

        if not MIN_INTERVAL <= args.interval <= 3600 or args.count < 0:
            raise UsageError(f"--interval must be between {MIN_INTERVAL:g} and 3600 seconds, --count 0 or more")
        client = ControlClient(args.agent, token_file=args.token_file)
        try:
            asyncio.run(watch(client, sys.stdout, interval=args.interval, count=args.count, clear=sys.stdout.isatty()))
        except KeyboardInterrupt:
            sys.stdout.write("\n")
        return 0
    statuses = BlockingControlClient(args.agent, token_file=args.token_file).list()
    if args.json:
        json.dump({"packages": [s.to_json() for s in statuses]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(statuses))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from pathlib import Path

    from p2pdist.agent.service import run_agent

    return run_agent(None if args.config is None else Path(args.config), verbose=args.verbose)


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def progress_bar(progress: float, width: int = BAR_WIDTH) -> str:
    progress = min(1.0, max(0.0, progress))
    filled = int(progress * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {progress * 100:5.1f}%"


def _row(status: PackageStatus) -> tuple[str, ...]:
    return (
        status.package_id,
        "-" if status.version is None else str(status.version),
        status.state,
        status.error_kind or ("error" if status.error else "-"),
        progress_bar(status.progress),
        human_bytes(status.size) if status.size else "-",
        human_bytes(status.download_rate),
        human_bytes(status.upload_rate),
        str(status.peers),
        human_bytes(status.bytes_from_peers),
        human_bytes(status.bytes_from_webseed),
        status.seed_until.replace("T", " ").removesuffix("Z") or "-",
    )


async def watch(client: ControlClient, out: TextIO, *, interval: float, count: int = 0, clear: bool = False) -> None:
    """Draw the table every ``interval`` seconds, ``count`` times (0: until cancelled or Ctrl-C).

    An agent that stops answering is a line in the view, not the end of it: the view picks the
    agent up again when it is back (a service restart).
    """
    import asyncio  # not at the top: one look at the status runs no event loop

    shown = 0
    while count == 0 or shown < count:
        began = time.monotonic()
        try:
            body = render_table(await client.list())
        except (P2pdistError, OSError) as exc:
            body = f"agent unavailable: {one_line(str(exc))}\n"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        head = f"p2pdist status  {stamp}  every {interval:g} s, Ctrl-C to stop\n\n"
        out.write((CLEAR if clear else "" if shown == 0 else "\n") + head + body)
        out.flush()
        shown += 1
        if count and shown >= count:
            return
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))


def render_table(statuses: Sequence[PackageStatus]) -> str:
    """A fixed-width table, then one line per package error; plain text for any terminal."""
    if not statuses:
        return "no packages\n"
    rows = [COLUMNS, *(_row(s) for s in statuses)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for status in statuses:
        version = "" if status.version is None else f" v{status.version}"
        if status.error:
            lines.append(f"{status.package_id}{version}: {status.error_kind or 'error'}: {status.error}")
        if status.tracker_error and status.tracker_error != status.error:
            lines.append(f"{status.package_id}{version}: tracker: {status.tracker_error}")
    return "\n".join(lines) + "\n"
