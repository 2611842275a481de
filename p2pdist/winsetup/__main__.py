"""``python -m p2pdist.winsetup install|uninstall``: what install.cmd and uninstall.cmd run.

    install.cmd REPOSITORY_URL PUBLIC_KEY [--port 6881]   first install, or new settings
    install.cmd                                           upgrade, keeping agent.toml
    uninstall.cmd [--keep-data]                           remove everything

Exit 0 when done, 1 with one line when a step failed, 2 for wrong arguments: an SMS program
reports these codes as they are.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from p2pdist import __version__
from p2pdist.winsetup import plan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="install.cmd / uninstall.cmd", description="Install or remove p2pdist on this PC.")
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install", help="install or upgrade (run elevated)")
    install.add_argument("repository", nargs="?", help="the site server's URL, e.g. http://sms01:6969")
    install.add_argument("public_key", nargs="?", help="the repository's public key (64 hex digits)")
    install.add_argument("--port", type=int, default=plan.DEFAULT_PORT, help="peer port to listen on and open in the firewall")
    install.add_argument("--control-port", type=int, default=None, help="control API port if 7881 is taken (program lines then need --agent)")
    install.add_argument("--listen-address", default=None, help="the one IP address peers connect to (default: every address)")
    remove = commands.add_parser("uninstall", help="remove p2pdist (run elevated)")
    remove.add_argument("--keep-data", action="store_true", help="keep the cache, state and agent.toml")
    copy = commands.add_parser("copy-runtime", help=argparse.SUPPRESS)  # uninstall.cmd: python and lib to TARGET
    copy.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if sys.platform != "win32":
        print("p2pdist setup: error: install.cmd and uninstall.cmd run on Windows", file=sys.stderr)
        return 2
    from p2pdist.winsetup import steps

    settings = None
    try:
        if args.command == "install" and (args.repository is not None or args.public_key is not None):
            if args.public_key is None:
                raise plan.PlanError("give both the site server's URL and the repository's public key")
            settings = plan.check_settings(args.repository, args.public_key, args.port, args.control_port, args.listen_address)
    except plan.PlanError as exc:
        print(f"p2pdist setup: error: {exc}", file=sys.stderr)
        return 2
    if not steps.is_admin():
        print("p2pdist setup: error: run elevated (as an administrator, or as an SMS program)", file=sys.stderr)
        return 1
    if args.command == "copy-runtime":
        return steps.copy_runtime(Path(sys.executable).resolve().parent.parent, args.target)
    layout = steps.machine_layout()
    log = steps.Log(layout)
    try:
        if args.command == "install":
            bundle = Path(sys.executable).resolve().parent.parent
            steps.install(bundle, layout, settings, __version__, log)
        else:
            steps.uninstall(layout, log, keep_data=args.keep_data)
    except (steps.StepError, plan.PlanError, OSError) as exc:
        print(f"p2pdist setup: error: {exc}", file=sys.stderr, flush=True)
        if args.command == "install":
            log(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
