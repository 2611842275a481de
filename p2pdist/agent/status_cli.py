"""``p2pdist status`` (what the agent holds, as a table or JSON) and ``p2pdist agent`` (the daemon)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from p2pdist.agent.control_client import ControlClient, PackageStatus

BAR_WIDTH = 12
COLUMNS = ("PACKAGE", "VER", "STATE", "PROBLEM", "PROGRESS", "SIZE", "DOWN/s", "UP/s", "PEERS", "FROM PEERS", "FROM WEBSEED", "SEED UNTIL")


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    status = subparsers.add_parser("status", help="show the packages the local agent holds")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--agent", metavar="ADDR", default=None, help="control address: unix:/path or http://127.0.0.1:PORT")
    status.add_argument("--token-file", type=Path, default=None, help="control token file (http addresses)")
    status.set_defaults(handler=_status)

    agent = subparsers.add_parser("agent", help="run the agent daemon (as python -m p2pdist.agent)")
    agent.add_argument("--config", type=Path, default=None, help="agent.toml (default: the platform's config path)")
    agent.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    agent.set_defaults(handler=_agent)


def _status(args: argparse.Namespace) -> int:
    client = ControlClient(args.agent, token_file=args.token_file)
    statuses = asyncio.run(client.list())
    if args.json:
        json.dump({"packages": [s.to_json() for s in statuses]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_table(statuses))
    return 0


def _agent(args: argparse.Namespace) -> int:
    from p2pdist.agent.service import run_agent

    return run_agent(args.config, verbose=args.verbose)


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
