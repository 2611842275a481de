"""``p2pdist server``, ``p2pdist publish`` and ``p2pdist retire``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import sys
from collections.abc import Sequence

from p2pdist.errors import InputError, P2pdistError, UsageError
from p2pdist.metainfo import normalize_package_id
from p2pdist.metainfo.model import MAX_TORRENT_BYTES


def add_server_arguments(server: argparse.ArgumentParser) -> None:
    server.add_argument("--config", type=Path, help="site.toml (embedded defaults without it)")
    server.add_argument("--host", help="override listen.host")
    server.add_argument("--port", type=int, help="override listen.port")
    server.add_argument("-v", "--verbose", action="store_true", help="log every publish/retire and sweep")
    server.set_defaults(handler=run_server)


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = subparsers.add_parser("server", help="run the site server (tracker + repository + page); `server init DIR` sets one up")
    add_server_arguments(server)
    server_commands = server.add_subparsers(dest="server_command", metavar="init")
    init = server_commands.add_parser("init", help="write a commented site.toml, an admin token and a signing key pair into DIR")
    init.add_argument("folder", type=Path, metavar="DIR")
    init.add_argument("--port", type=int, default=6969, help="listen.port written into site.toml (default 6969)")
    init.set_defaults(handler=run_init)

    publish = subparsers.add_parser("publish", help="upload a signed torrent to the site server")
    publish.add_argument("torrent", type=Path, metavar="FILE.torrent")
    publish.add_argument("--server", required=True, help="site server URL, e.g. https://sms-hq:6969")
    publish.add_argument("--token-file", type=Path, help="file holding the admin token ($P2PDIST_ADMIN_TOKEN otherwise)")
    publish.set_defaults(handler=run_publish)

    retire = subparsers.add_parser("retire", help="stop offering a package (one version or all)")
    retire.add_argument("package", metavar="PACKAGEID")
    retire.add_argument("--version", type=int, dest="package_version", help="only this SourceVersion")
    retire.add_argument("--server", required=True, help="site server URL")
    retire.add_argument("--token-file", type=Path, help="file holding the admin token ($P2PDIST_ADMIN_TOKEN otherwise)")
    retire.set_defaults(handler=run_retire)


def run_server(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from p2pdist.tracker.server import run
    from p2pdist.tracker.settings import load_server_settings

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")
    settings = load_server_settings(args.config)
    if settings.log_file is not None:
        from p2pdist.logfile import rotating_file_handler

        logging.getLogger().addHandler(rotating_file_handler(settings.log_file))
    listen = settings.listen
    if args.host is not None:
        listen = replace(listen, host=args.host)
    if args.port is not None:
        listen = replace(listen, port=args.port)
    return run(replace(settings, listen=listen))


def run_init(args: argparse.Namespace) -> int:
    from p2pdist.tracker.init import init_site, next_steps

    if not 0 < args.port <= 65535:
        raise UsageError(f"--port {args.port} outside 1-65535")
    print(next_steps(init_site(args.folder, port=args.port)))
    return 0


def run_publish(args: argparse.Namespace) -> int:
    from p2pdist.tracker import client

    token = client.read_token(args.token_file)
    try:
        with open(args.torrent, "rb") as handle:
            data = handle.read(MAX_TORRENT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {args.torrent}: {exc.strerror}") from None
    result = asyncio.run(client.publish(args.server, data, token))
    package = result.get("package", {})
    state = "published" if result.get("created") else "already published"
    print(f"{state}: {package.get('package')} v{package.get('version')} ({package.get('info_hash')})")
    return 0


def run_retire(args: argparse.Namespace) -> int:
    from p2pdist.tracker import client

    try:
        package_id = normalize_package_id(args.package)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    token = client.read_token(args.token_file)
    result = asyncio.run(client.retire(args.server, package_id, args.package_version, token))
    for package in result.get("retired", []):
        print(f"retired: {package.get('package')} v{package.get('version')} ({package.get('info_hash')})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m p2pdist.tracker``: the ``server`` command on its own."""
    parser = argparse.ArgumentParser(prog="python -m p2pdist.tracker", description="Run the p2pdist site server.")
    add_server_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_server(args)
    except P2pdistError as exc:
        print(f"p2pdist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
