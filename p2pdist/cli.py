"""The ``p2pdist`` command: one entry point, subcommands contributed by each component.

Each module in COMMAND_MODULES defines ``add_commands(subparsers)`` and sets ``handler`` on its
parsers: a function taking the parsed namespace and returning an exit code. User errors print
one line (``p2pdist: error: ...``) and exit with the error's own code; no traceback.

Only the module of the command being run is imported (COMMANDS says which): the engine and the
site server pull in aiohttp and more, and ``p2pdist create`` should not pay for them at start.
``p2pdist --help`` and unknown commands import them all to list every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from p2pdist import __version__
from p2pdist.errors import P2pdistError

COMMANDS = {
    "create": "p2pdist.creator.cli",
    "show": "p2pdist.creator.cli",
    "keygen": "p2pdist.creator.cli",
    "sign": "p2pdist.creator.cli",
    "server": "p2pdist.tracker.cli",
    "publish": "p2pdist.tracker.cli",
    "retire": "p2pdist.tracker.cli",
    "prestage": "p2pdist.tracker.prestage_cli",
    "get": "p2pdist.engine.cli",
    "seed": "p2pdist.engine.cli",
    "status": "p2pdist.agent.status_cli",
    "agent": "p2pdist.agent.status_cli",
    "doctor": "p2pdist.agent.doctor",
    "demo": "p2pdist.demo",
}
COMMAND_MODULES = list(dict.fromkeys(COMMANDS.values()))

EXIT_INTERRUPTED = 130


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone when it is known, else for every command."""
    parser = argparse.ArgumentParser(prog="p2pdist", description="Peer-to-peer distribution of SMS/SCCM packages.")
    parser.add_argument("--version", action="version", version=f"p2pdist {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    return next((word for word in argv if not word.startswith("-")), None)


def fail(message: str, code: int) -> int:
    print(f"p2pdist: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except P2pdistError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", EXIT_INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
