"""The ``p2pdist`` command: one entry point, subcommands contributed by each component.

Each module in COMMAND_MODULES defines ``add_commands(subparsers)`` and sets ``handler`` on its
parsers: a function taking the parsed namespace and returning an exit code. User errors print
one line (``p2pdist: error: ...``) and exit with the error's own code; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from p2pdist import __version__
from p2pdist.errors import P2pdistError

COMMAND_MODULES = [
    "p2pdist.creator.cli",
    "p2pdist.tracker.cli",
    "p2pdist.agent.cli",
]

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2pdist", description="Peer-to-peer distribution of SMS/SCCM packages.")
    parser.add_argument("--version", action="version", version=f"p2pdist {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def fail(message: str, code: int) -> int:
    print(f"p2pdist: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except P2pdistError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
