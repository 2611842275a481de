"""``python -m p2pdist.agent --config agent.toml``: the agent daemon (same as ``p2pdist agent``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from p2pdist.agent.service import run_agent
from p2pdist.errors import P2pdistError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m p2pdist.agent", description="The p2pdist agent daemon.")
    parser.add_argument("--config", type=Path, default=None, help="agent.toml (default: the platform's config path)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        return run_agent(args.config, verbose=args.verbose)
    except P2pdistError as exc:
        print(f"p2pdist agent: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
