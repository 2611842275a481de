"""One-shot engine commands: ``p2pdist get`` downloads a torrent, ``p2pdist seed`` serves one.

Both run one session on the command line's terms: the torrent's trackers unless
``--no-tracker``, plus any ``--peer HOST:PORT`` given. ``get`` exits 0 once every piece is
verified and the files are under their final names; ``seed`` verifies existing data and serves it
until interrupted (or ``--duration``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from p2pdist.aio import stop_tasks, wait_event
from p2pdist.engine.addresses import parse_host_port
from p2pdist.engine.runtime import run
from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.torrent import Torrent, TorrentState
from p2pdist.engine.tracker_client import TrackerClient
from p2pdist.errors import InputError, LocalError, OutputError, P2pdistError, UsageError
from p2pdist.metainfo import Metainfo, read_metainfo
from p2pdist.storage.base import StorageError
from p2pdist.storage.files import FileStorage

EXIT_INCOMPLETE = 1


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = subparsers.add_parser("get", help="download a torrent and exit when it is complete and verified")
    get.add_argument("torrent", type=Path, help=".torrent file")
    get.add_argument("-o", "--output", type=Path, required=True, help="download folder")
    get.add_argument("--seed-after", type=float, default=0.0, metavar="SECONDS", help="keep seeding this long after completing")
    get.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="give up after this long, checking and the goodbye to the tracker included (0: never)",
    )
    _common(get)
    get.set_defaults(handler=_get)

    seed = subparsers.add_parser("seed", help="verify existing data and seed it until stopped")
    seed.add_argument("torrent", type=Path, help=".torrent file")
    seed.add_argument("directory", type=Path, help="folder that holds the torrent's data")
    seed.add_argument("--duration", type=float, default=0.0, metavar="SECONDS", help="stop after this long (0: until Ctrl-C)")
    _common(seed)
    seed.set_defaults(handler=_seed)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--peer", action="append", default=[], metavar="HOST:PORT", help="connect to this peer (repeatable)")
    parser.add_argument("--port", type=int, default=0, help="listening port (default: any free port)")
    parser.add_argument("--listen", default="0.0.0.0", metavar="ADDRESS", help="listening address")
    parser.add_argument("--no-tracker", action="store_true", help="do not announce to the torrent's trackers")
    parser.add_argument("--upload-limit", type=int, default=0, metavar="BYTES/S")
    parser.add_argument("--download-limit", type=int, default=0, metavar="BYTES/S")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log peer activity to stderr")


def _load(path: Path) -> Metainfo:
    if not path.is_file():
        raise InputError(f"{path}: no such torrent file")
    try:
        return read_metainfo(str(path))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    except P2pdistError as exc:
        raise type(exc)(f"{path}: bad torrent: {exc}") from None


def _settings(args: argparse.Namespace) -> EngineSettings:
    if not 0 <= args.port < 65536:
        raise UsageError("--port must be 0..65535")
    specific = args.listen not in ("0.0.0.0", "::")
    return EngineSettings(
        listen_host=args.listen,
        listen_port=args.port,
        bind_host=args.listen if specific else None,
        upload_rate_limit=args.upload_limit,
        download_rate_limit=args.download_limit,
    )


def _writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create folder: {exc.strerror}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder is not writable")


def _resume_path(directory: Path, meta: Metainfo) -> Path:
    return directory / ".p2pdist" / f"{meta.info_hash_hex}.resume"


def _logging(verbose: bool) -> None:
    """Verbose: every peer's story, time-stamped. Else only warnings, one plain line each
    (a tracker that refuses us, a web seed that fails), as the command's own messages."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "p2pdist: %(message)s",
        stream=sys.stderr,
    )


def _prepare(args: argparse.Namespace) -> tuple[Metainfo, EngineSettings, list[tuple[str, int]]]:
    """What get and seed both check before touching any data: torrent, settings, peers."""
    _logging(args.verbose)
    meta = _load(args.torrent)
    return meta, _settings(args), [parse_host_port(text) for text in args.peer]


def _get(args: argparse.Namespace) -> int:
    meta, settings, peers = _prepare(args)
    _writable_dir(args.output)
    (args.output / ".p2pdist").mkdir(exist_ok=True)
    storage = FileStorage(meta.info, args.output, resume_path=_resume_path(args.output, meta), info_hash=meta.info_hash)
    return run(_swarm(meta, storage, settings, peers, args, download=True))


def _seed(args: argparse.Namespace) -> int:
    meta, settings, peers = _prepare(args)
    if not args.directory.is_dir():
        raise InputError(f"{args.directory}: no such folder")
    storage = FileStorage(meta.info, args.directory, info_hash=meta.info_hash)
    return run(_swarm(meta, storage, settings, peers, args, download=False))


async def _swarm(
    meta: Metainfo,
    storage: FileStorage,
    settings: EngineSettings,
    peers: list[tuple[str, int]],
    args: argparse.Namespace,
    *,
    download: bool,
) -> int:
    loop = asyncio.get_running_loop()
    # get --timeout bounds the whole run: checking old data, the download and the goodbye.
    deadline = loop.time() + args.timeout if download and args.timeout > 0 else None
    session = Session(settings)
    await session.start()
    http: aiohttp.ClientSession | None = None
    tracker: TrackerClient | None = None
    tracker_task: asyncio.Task[None] | None = None
    torrent: Torrent | None = None
    bar = _progress(meta, quiet=args.quiet)
    scope = asyncio.timeout_at(deadline)
    try:
        try:
            async with scope:
                try:
                    torrent = await session.add_torrent(meta, storage)
                except StorageError as exc:
                    raise OutputError(str(exc)) from None
                if not download and not torrent.completed.is_set():
                    missing = meta.info.num_pieces - torrent.have.count
                    raise InputError(
                        f"{args.directory}: data does not match the torrent ({missing} of {meta.info.num_pieces} pieces missing or wrong)"
                    )
                if meta.trackers and not args.no_tracker:
                    connector = aiohttp.TCPConnector(local_addr=(settings.bind_host, 0) if settings.bind_host else None)
                    http = aiohttp.ClientSession(connector=connector)
                    tracker = TrackerClient(torrent, http, port=session.port)
                    tracker_task = asyncio.ensure_future(tracker.run())
                torrent.add_peer_addresses(peers)
                if not args.quiet:
                    print(f"p2pdist: {meta.info.name} ({meta.info_hash_hex}) listening on port {session.port}", file=sys.stderr)
                if download:
                    await _wait_complete(torrent, bar)
                    if not args.quiet:
                        print(f"p2pdist: {meta.info.name} complete: {meta.info.total_length} bytes verified", file=sys.stderr)
                    if args.seed_after > 0:
                        await wait_event(torrent.stopped, args.seed_after)
                else:
                    await wait_event(torrent.stopped, args.duration or None)
                return 0
        except TimeoutError:
            if not scope.expired():
                raise  # a timeout of something else, not of --timeout
            print(f"p2pdist: error: download incomplete after {args.timeout:g} s ({_progress_line(torrent)})", file=sys.stderr)
            return EXIT_INCOMPLETE
    finally:
        if bar is not None:
            bar.close()
        if tracker_task is not None:
            await stop_tasks([tracker_task], owner="tracker")
        if tracker is not None:
            await tracker.stop(timeout=5.0 if deadline is None else min(5.0, deadline - loop.time()))
        if http is not None:
            await http.close()
        await session.close()


def _progress_line(torrent: Torrent | None) -> str:
    if torrent is None:
        return "still checking the data on disk"
    done = torrent.info.total_length - torrent.left
    return f"{done * 100 // max(1, torrent.info.total_length)}% verified, {len(torrent.peers)} peers"


def _progress(meta: Metainfo, *, quiet: bool) -> Any:  # a tqdm bar (untyped) or None
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=meta.info.total_length, unit="B", unit_scale=True, unit_divisor=1024, desc=meta.info.name[:30], file=sys.stderr)


async def _wait_complete(torrent: Torrent, bar: Any) -> None:
    """Until every piece is verified and the files carry their final names."""
    shown = 0
    while not torrent.completed.is_set():
        if torrent.state is TorrentState.ERROR:
            raise LocalError(f"download failed: {torrent.error}")
        await wait_event(torrent.completed, 0.25)
        if bar is not None:
            done = torrent.info.total_length - torrent.left
            bar.update(done - shown)
            shown = done
    if torrent.state is TorrentState.ERROR:
        raise LocalError(f"download failed: {torrent.error}")
    if bar is not None:
        bar.update(torrent.info.total_length - shown)
