"""``p2pdist create``, ``show``, ``keygen`` and ``sign``: making and inspecting package torrents.

Options follow mktorrent where the two overlap: ``-t`` is repeatable and each ``-t`` starts a
new tracker tier, while commas inside one ``-t`` put several trackers in the same tier
(``-t http://a/announce,http://b/announce -t http://backup/announce`` is two tiers). Piece sizes
are powers of two written ``256K``, ``1M``, ``4194304`` or as mktorrent's exponent (``20``).

User errors end in one line and the error's exit code: 2 bad arguments, 3 unreadable input,
4 unwritable output, 6 a signature that is not valid with the key given to ``show --key``.
Signing imports ``cryptography`` and the progress bar imports ``tqdm`` only when used, which
keeps the command quick to start.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from p2pdist.creator.build import (
    TRACKER_SCHEMES,
    WEB_SEED_SCHEMES,
    TorrentOptions,
    build_torrent,
    check_url,
    doubled_folder,
    parse_piece_size,
)
from p2pdist.creator.output import check_writable, write_atomic
from p2pdist.creator.scan import scan_path
from p2pdist.metainfo.paths import check_component
from p2pdist.errors import InputError, LocalError, MetainfoError, OutputError, RemoteError, SignatureError, UsageError
from p2pdist.metainfo import Metainfo, PackageIdentity, normalize_package_id, read_metainfo

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from typing import Any

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


CREATE_EPILOG = """\
trackers: each -t is one tier; URLs joined by commas share a tier:
  -t http://site1/announce,http://site2/announce -t http://backup/announce
piece size: automatic aims at 1000-2000 pieces (16K..16M); 1 GiB gets 1M.
excludes: a glob without "/" matches a file or folder name at any depth
  (-e '*.tmp' -e Thumbs.db); with "/" it matches the path inside the folder
  (-e 'logs/*.txt'); matching ignores case.
the info-hash depends only on the files and on --private, --piece-size,
  --exclude, --pkg and --version: trackers, web seeds, comment, date and
  signature can change without changing it.

examples:
  p2pdist create D:\\SMSPKGD$\\PS100012 --pkg PS100012 --version 3 -t http://site/announce
  p2pdist create --dp D:\\SMSPKGD$ -O torrents -w http://dp01/SMSPKGD$/ --sign-key site.key
"""


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_create(subparsers)
    _add_show(subparsers)
    _add_keygen(subparsers)
    _add_sign(subparsers)


def _add_create(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "create",
        help="make a torrent from a file, a package folder or a whole DP share",
        description="Make a private v1 torrent of PATH (a file or a package folder), or with --dp one "
        "torrent per PackageID folder of a distribution-point share.",
        epilog=CREATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", nargs="?", metavar="PATH", help="file or folder to share")
    parser.add_argument("-o", "--output", metavar="FILE", help="torrent to write (default: NAME.torrent here)")
    parser.add_argument("--dp", metavar="SHARE", help="DP share: one subfolder per PackageID")
    parser.add_argument("-O", "--output-dir", metavar="OUTDIR", help="with --dp: folder for <PackageID>.torrent files")
    parser.add_argument(
        "-t", "--tracker", action="append", default=[], metavar="URL[,URL...]",
        help="announce URL; each -t is a tier, commas put URLs in the same tier",
    )
    parser.add_argument(
        "-w", "--web-seed", action="append", default=[], metavar="URL",
        help="BEP 19 web seed; with --dp the base URL of the share (the folder holding the package folders)",
    )
    parser.add_argument("-p", "--private", action=argparse.BooleanOptionalAction, default=True, help="private torrent (default: on)")
    parser.add_argument("--piece-size", metavar="SIZE", help="power of two, e.g. 256K, 1M, 20 (=2^20); default: auto")
    parser.add_argument("--max-piece-size", metavar="SIZE", help="ceiling for the automatic piece size (default 16M)")
    parser.add_argument("-n", "--name", help="the torrent's name: its folder (or file) in every cache, shown on the status page")
    parser.add_argument("-s", "--source", dest="source_tag", metavar="TEXT", help="info 'source' field: another info-hash for the same files")
    parser.add_argument("-e", "--exclude", action="append", default=[], metavar="GLOB", help="leave out matching files or folders")
    parser.add_argument("-c", "--comment", metavar="TEXT")
    parser.add_argument("--pkg", metavar="PACKAGEID", help="SMS PackageID carried in the torrent (e.g. PS100012)")
    parser.add_argument("--version", dest="source_version", type=int, metavar="N", help="SMS SourceVersion (default 1; with --dp: last + 1)")
    parser.add_argument("--sign-key", metavar="FILE", help="Ed25519 private key (from p2pdist keygen) to sign with")
    parser.add_argument("--no-date", "--nodate", action="store_true", help="write no creation date")
    parser.add_argument("-j", "--json", action="store_true", help="print what was written as JSON")
    parser.add_argument("-f", "--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--threads", type=int, metavar="N", help="hashing threads (default: one per core)")
    parser.set_defaults(handler=run_create)


def _add_show(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("show", help="describe a torrent", description="Describe a torrent file.")
    parser.add_argument("torrent", metavar="FILE.torrent")
    parser.add_argument("--key", metavar="PUBKEYFILE", help="verify the signature with this public key (exit 6 unless valid)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(handler=run_show)


def _add_keygen(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "keygen",
        help="make an Ed25519 signing key pair",
        description="Write a private signing key (mode 0600) to KEYFILE and its public key as hex to KEYFILE.pub.",
    )
    parser.add_argument("-o", "--output", required=True, metavar="KEYFILE")
    parser.set_defaults(handler=run_keygen)


def _add_sign(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("sign", help="sign an existing torrent", description="Sign a torrent that has a package identity.")
    parser.add_argument("torrent", metavar="FILE.torrent")
    parser.add_argument("--sign-key", required=True, metavar="KEY")
    parser.add_argument("-o", "--output", metavar="OUT", help="where to write (default: replace FILE.torrent)")
    parser.set_defaults(handler=run_sign)


# -- helpers ---------------------------------------------------------------------------------


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{size} B"
    return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"


def emit(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def note(text: str) -> None:
    print(f"p2pdist: note: {text}", file=sys.stderr)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar on a terminal; nothing when stderr is piped or redirected."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def parse_trackers(values: list[str]) -> tuple[tuple[str, ...], ...]:
    tiers = []
    for value in values:
        tier = tuple(check_url(url.strip(), TRACKER_SCHEMES, "tracker") for url in value.split(",") if url.strip())
        if not tier:
            raise UsageError(f"-t {value!r} holds no URL")
        tiers.append(tier)
    return tuple(tiers)


def load_signing_key(path: str) -> Ed25519PrivateKey:
    from p2pdist.metainfo.signing import load_private_key

    try:
        return load_private_key(Path(path))
    except LocalError as exc:
        raise InputError(str(exc)) from None


def load_torrent(path: str) -> Metainfo:
    try:
        return read_metainfo(path)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a torrent") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except RemoteError as exc:
        raise InputError(f"{path} is not a valid torrent: {exc}") from None


def _base_options(args: argparse.Namespace) -> TorrentOptions:
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.source_version is not None and not 0 <= args.source_version < 2**31:
        raise UsageError(f"--version {args.source_version} is out of range (0 to 2147483647)")
    piece_length = parse_piece_size(args.piece_size) if args.piece_size is not None else None
    ceiling = parse_piece_size(args.max_piece_size) if args.max_piece_size is not None else None
    if piece_length is not None and ceiling is not None and piece_length > ceiling:
        raise UsageError(f"--piece-size {args.piece_size} is above --max-piece-size {args.max_piece_size}")
    return TorrentOptions(
        trackers=parse_trackers(args.tracker),
        private=args.private,
        piece_length=piece_length,
        comment=args.comment or None,
        creation_date=None if args.no_date else int(time.time()),
        max_piece_length=ceiling,
        source_tag=args.source_tag or None,
    )


def _summary_json(meta: Metainfo, output: Path) -> dict[str, Any]:
    info = meta.info
    return {
        "torrent": str(output),
        "name": info.name,
        "info_hash": meta.info_hash_hex,
        "size": info.total_length,
        "files": len(info.real_files),
        "pieces": info.num_pieces,
        "piece_length": info.piece_length,
        "private": info.private,
        "package_id": info.package.package_id if info.package else None,
        "version": info.package.version if info.package else None,
        "trackers": [list(tier) for tier in meta.trackers],
        "web_seeds": list(meta.web_seeds),
        "signed": meta.signature is not None,
    }


def _describe(meta: Metainfo) -> str:
    info = meta.info
    files = len(info.real_files)
    return (
        f"{files} file{'s' if files != 1 else ''}, {human_size(info.total_length)}, "
        f"{info.num_pieces} pieces of {human_size(info.piece_length)}, info-hash {meta.info_hash_hex}"
    )


# -- create ----------------------------------------------------------------------------------


def run_create(args: argparse.Namespace) -> int:
    if args.dp is not None:
        return _create_share(args)
    if args.path is None:
        raise UsageError("create needs PATH (a file or folder) or --dp SHARE")
    if args.output_dir is not None:
        raise UsageError("-O/--output-dir goes with --dp; use -o FILE for one torrent")
    options = _base_options(args)
    web_seeds = tuple(check_url(url, WEB_SEED_SCHEMES, "web seed") for url in args.web_seed)
    package = None
    if args.pkg is not None:
        try:
            package_id = normalize_package_id(args.pkg)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        package = PackageIdentity(package_id, 1 if args.source_version is None else args.source_version)
    elif args.source_version is not None:
        raise UsageError("--version needs --pkg")
    if args.sign_key is not None and package is None:
        raise UsageError("--sign-key needs --pkg: a signature covers the package identity")
    source = scan_path(Path(args.path), args.exclude)
    if args.name is not None:
        try:
            check_component(args.name, "--name")
        except MetainfoError as exc:
            raise UsageError(str(exc)) from None
        source = source.replace(name=args.name)
    output = Path(args.output) if args.output else Path(f"{source.name}.torrent")
    check_writable(output, overwrite=args.force)
    key = load_signing_key(args.sign_key) if args.sign_key else None
    for text in source.notes:
        note(text)
    for url in web_seeds:
        if warning := doubled_folder(url, source.name):
            note(warning)
    options = options.replace(web_seeds=web_seeds, package=package)
    with progress_bar(source.name, source.total_size) as progress:
        data, meta = build_torrent(source, options, sign_key=key, threads=args.threads, progress=progress)
    write_atomic(output, data)
    if args.json:
        import json  # only for --json: not on every start

        print(json.dumps(_summary_json(meta, output), indent=1))
    else:
        print(f"wrote {output}: {_describe(meta)}")
    return 0


def _create_share(args: argparse.Namespace) -> int:
    if args.path is not None:
        raise UsageError("give either PATH or --dp SHARE, not both")
    if args.output_dir is None:
        raise UsageError("--dp needs -O/--output-dir OUTDIR")
    if args.output is not None:
        raise UsageError("-o FILE is for one torrent; --dp writes <PackageID>.torrent files into -O OUTDIR")
    if args.pkg is not None:
        raise UsageError("--pkg is taken from each folder name with --dp")
    if args.name is not None:
        raise UsageError("--name is each PackageID folder's own with --dp")
    from p2pdist.creator.share import PackageResult, ShareOptions, build_share, web_seed_for_share  # --dp only

    options = _base_options(args)
    web_seeds = tuple(web_seed_for_share(check_url(url, WEB_SEED_SCHEMES, "web seed")) for url in args.web_seed)
    outdir = Path(args.output_dir)
    if not outdir.is_dir():
        raise OutputError(f"output folder {outdir} does not exist")
    key = load_signing_key(args.sign_key) if args.sign_key else None
    key_id = None
    if key is not None:
        from p2pdist.metainfo.signing import raw_public_key

        key_id = raw_public_key(key.public_key()).hex()
    share_options = ShareOptions(
        torrent=options.replace(web_seeds=web_seeds),
        excludes=tuple(args.exclude),
        version=args.source_version,
        sign_key=key,
        sign_key_id=key_id,
        threads=args.threads,
    )

    for url in web_seeds:
        last = url.rstrip("/").rsplit("/", 1)[-1]
        if _is_package_id(last):
            note(f"web seed {url} ends with a package folder ({last}/): with --dp give the share's URL, the folder holding the package folders")

    def report(result: PackageResult) -> None:
        for text in result.notes:
            note(f"{result.package_id}: {text}")
        if result.error is not None:
            print(f"{result.package_id}: failed: {result.error}", file=sys.stderr)
        elif not args.json:
            print(f"{result.package_id} v{result.version} {result.action}: {result.torrent} info-hash {result.info_hash}")

    results = build_share(Path(args.dp), outdir, share_options, note=note, report=report, progress_for=progress_bar)
    counts = {action: sum(r.action == action for r in results) for action in ("created", "updated", "rewritten", "unchanged", "failed")}
    if args.json:
        packages = [
            {"package_id": r.package_id, "action": r.action, "version": r.version, "info_hash": r.info_hash,
             "torrent": str(r.torrent) if r.torrent else None, "error": str(r.error) if r.error else None}
            for r in results
        ]  # fmt: skip
        import json

        print(json.dumps({"packages": packages, "counts": counts}, indent=1))
    else:
        print(", ".join(f"{count} {action}" for action, count in counts.items()))
    failures = [r.error for r in results if r.error is not None]
    return failures[0].exit_code if failures else 0


def _is_package_id(text: str) -> bool:
    try:
        normalize_package_id(text)
    except ValueError:
        return False
    return True


# -- show ------------------------------------------------------------------------------------


def signature_report(meta: Metainfo, key_path: str | None) -> dict[str, Any]:
    """Signature status: without a key only who signed, never a claim that it is valid."""
    if meta.signature is None:
        return {"status": "unsigned", "signed_by": None, "verified": False}
    from p2pdist.metainfo.signing import SignatureStatus, key_fingerprint, load_public_key, verify_signature

    signed_by = key_fingerprint(meta.signature.public_key)
    if key_path is None:
        return {"status": "not verified", "signed_by": signed_by, "verified": False}
    try:
        trusted = load_public_key(Path(key_path))
    except LocalError as exc:
        raise InputError(str(exc)) from None
    status = verify_signature(meta, [trusted])
    names = {
        SignatureStatus.VALID: "valid",
        SignatureStatus.UNTRUSTED_KEY: "untrusted",
        SignatureStatus.BAD_SIGNATURE: "bad",
        SignatureStatus.NO_PACKAGE: "bad",
        SignatureStatus.UNSIGNED: "unsigned",
    }
    return {"status": names[status], "signed_by": signed_by, "verified": True, "reason": status.value}


def torrent_summary(meta: Metainfo, key_path: str | None = None) -> dict[str, Any]:
    info = meta.info
    return {
        "name": info.name,
        "info_hash": meta.info_hash_hex,
        "total_size": info.total_length,
        "piece_length": info.piece_length,
        "num_pieces": info.num_pieces,
        "multi_file": info.multi_file,
        "private": info.private,
        "files": [{"path": f.relpath, "length": f.length} for f in info.real_files],
        "trackers": [list(tier) for tier in meta.trackers],
        "web_seeds": list(meta.web_seeds),
        "comment": meta.comment,
        "created_by": meta.created_by,
        "creation_date": meta.creation_date,
        "package": None if info.package is None else {"id": info.package.package_id, "version": info.package.version},
        "signature": signature_report(meta, key_path),
    }


def _signature_line(signature: dict[str, Any]) -> str:
    status = signature["status"]
    if status == "unsigned":
        return "unsigned"
    if not signature["verified"]:
        return f"signed by {signature['signed_by']}, not verified (pass --key PUBKEYFILE)"
    return f"{status}: {signature['reason']} (key {signature['signed_by']})"


def format_summary(summary: dict[str, Any]) -> str:
    rows = [
        ("name", summary["name"]),
        ("info-hash", summary["info_hash"]),
        ("size", f"{human_size(summary['total_size'])} ({summary['total_size']} bytes) in {len(summary['files'])} files"),
        ("pieces", f"{summary['num_pieces']} x {human_size(summary['piece_length'])}"),
        ("private", "yes" if summary["private"] else "no"),
        ("package", "none" if summary["package"] is None else f"{summary['package']['id']} v{summary['package']['version']}"),
        ("signature", _signature_line(summary["signature"])),
    ]
    for number, tier in enumerate(summary["trackers"], 1):
        rows.append((f"tracker tier {number}", " ".join(tier)))
    if not summary["trackers"]:
        rows.append(("trackers", "none"))
    rows.extend(("web seed", url) for url in summary["web_seeds"])
    if summary["comment"]:
        rows.append(("comment", summary["comment"]))
    if summary["created_by"]:
        rows.append(("created by", summary["created_by"]))
    if summary["creation_date"] is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(summary["creation_date"]))
        rows.append(("created", stamp))
    width = max(len(label) for label, _ in rows) + 1
    lines = [f"{label + ':':<{width}} {value}" for label, value in rows]
    lines.append("files:")
    lines.extend(f"  {item['length']:>14}  {item['path']}" for item in summary["files"])
    return "\n".join(lines)


def run_show(args: argparse.Namespace) -> int:
    meta = load_torrent(args.torrent)
    summary = torrent_summary(meta, args.key)
    import json

    emit(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    signature = summary["signature"]
    if args.key is not None and signature["status"] != "valid":
        raise SignatureError(f"{args.torrent}: signature {signature['status']}")
    return 0


# -- keygen and sign -------------------------------------------------------------------------


def run_keygen(args: argparse.Namespace) -> int:
    from p2pdist.metainfo.signing import generate_key, key_fingerprint, raw_public_key, write_private_key, write_public_key

    private_path = Path(args.output)
    public_path = Path(f"{args.output}.pub")
    for path in (private_path, public_path):
        if path.exists():
            raise OutputError(f"{path} exists; refusing to overwrite a key")
    check_writable(private_path, overwrite=False)
    key = generate_key()
    write_private_key(key, private_path)
    try:
        write_public_key(key.public_key(), public_path)
    except BaseException:
        private_path.unlink()
        raise
    fingerprint = key_fingerprint(raw_public_key(key.public_key()))
    print(f"wrote {private_path} (private, keep it secret) and {public_path} (public); fingerprint {fingerprint}")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from p2pdist.metainfo.signing import key_fingerprint, raw_public_key, sign_torrent

    meta = load_torrent(args.torrent)
    output = Path(args.output or args.torrent)
    check_writable(output, overwrite=True)
    key = load_signing_key(args.sign_key)
    if meta.info.package is None:
        raise InputError(f"{args.torrent} has no package identity (make it with --pkg); only package torrents are signed")
    write_atomic(output, sign_torrent(meta, key))
    fingerprint = key_fingerprint(raw_public_key(key.public_key()))
    print(f"wrote {output}: {meta.info.package} info-hash {meta.info_hash_hex} signed by {fingerprint}")
    return 0
