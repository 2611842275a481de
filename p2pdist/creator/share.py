"""A distribution-point share: one torrent per package folder, rebuilt only when it changed.

The share holds one folder per SMS package, named by its PackageID (``PS100012``). Each
becomes ``<PackageID>.torrent`` in the output folder: a multi-file torrent named after the
package folder, carrying the PackageID and SourceVersion in its info dictionary.

A small manifest in the output folder remembers, per package, every file's path, size and
mtime, the options that shape the info dictionary, the version and the info-hash. A re-run
skips a package whose files and options are as remembered. A package whose content changed gets
the next version (or the one given with ``--version``, which must then be higher): a
(PackageID, version) pair never names two different contents. Options outside the info
dictionary (trackers, web seeds, comment, signing key) rewrite the torrent under the same
version, with the same info-hash.

Web seeds (BEP 19): for a multi-file torrent a client appends ``<name>/<path>`` to a URL
ending in ``/`` (libtorrent adds the ``/`` if it is missing), so the URL written is the base
URL of the share, the folder that contains the package folders.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pdist.creator.build import TorrentOptions, build_torrent
from p2pdist.creator.output import write_atomic
from p2pdist.creator.scan import scan_path
from p2pdist.errors import InputError, OutputError, P2pdistError, RemoteError, UsageError
from p2pdist.metainfo import PackageIdentity, looks_like_package_id, normalize_package_id, read_metainfo

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MANIFEST_NAME = ".p2pdist-manifest.json"
# (package id, bytes to hash) -> a context giving the progress callback for build_torrent
ProgressFactory = Callable[[str, int], AbstractContextManager[Callable[[int], None] | None]]
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class SharePackage:
    package_id: str
    folder: Path


@dataclass(frozen=True)
class ShareOptions:
    """Options for every package of the share; ``torrent.package`` is filled per package."""

    torrent: TorrentOptions
    excludes: tuple[str, ...] = ()
    version: int | None = None
    sign_key: Ed25519PrivateKey | None = None
    sign_key_id: str | None = None
    threads: int | None = None


@dataclass(frozen=True)
class PackageResult:
    package_id: str
    action: str  # "created", "updated", "rewritten", "unchanged" or "failed"
    version: int | None = None
    info_hash: str | None = None
    torrent: Path | None = None
    error: P2pdistError | None = None
    notes: tuple[str, ...] = ()


def web_seed_for_share(base: str) -> str:
    """The url-list entry for packages under ``base`` (the folder holding the package folders)."""
    return base if base.endswith("/") else base + "/"


def list_share(share: Path) -> tuple[list[SharePackage], list[str]]:
    """Package folders of the share, sorted, and a note for each folder left out."""
    if not share.is_dir():
        raise InputError(f"{share} is not a folder")
    try:
        entries = sorted(share.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise InputError(f"cannot list {share}: {exc.strerror}") from None
    packages: list[SharePackage] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    for entry in entries:
        if not entry.is_dir():
            continue
        if not looks_like_package_id(entry.name):
            notes.append(f"skipped {entry.name}: not a PackageID folder")
            continue
        package_id = normalize_package_id(entry.name)
        if package_id in seen:
            notes.append(f"skipped {entry.name}: same PackageID as {seen[package_id]}")
            continue
        seen[package_id] = entry.name
        packages.append(SharePackage(package_id, entry))
    return packages, notes


def load_manifest(outdir: Path) -> tuple[dict[str, Any], list[str]]:
    """The remembered packages; an unreadable manifest means rebuild all (versions still bump)."""
    path = outdir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, []
    except (OSError, ValueError) as exc:
        return {}, [f"ignoring unreadable manifest {path}: {exc}"]
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("packages"), dict):
        return {}, [f"ignoring manifest {path}: unknown format"]
    packages = {key: value for key, value in data["packages"].items() if isinstance(value, dict)}
    return packages, []


def save_manifest(outdir: Path, packages: dict[str, Any]) -> None:
    text = json.dumps({"format": MANIFEST_FORMAT, "packages": packages}, indent=1, sort_keys=True)
    write_atomic(outdir / MANIFEST_NAME, text.encode("utf-8"))


def _info_key(options: ShareOptions) -> dict[str, Any]:
    key: dict[str, Any] = {
        "piece_length": options.torrent.piece_length,
        "private": options.torrent.private,
        "excludes": list(options.excludes),
    }
    # Only when set, so manifests written before these options existed still match.
    if options.torrent.max_piece_length is not None:
        key["max_piece_length"] = options.torrent.max_piece_length
    if options.torrent.source_tag is not None:
        key["source"] = options.torrent.source_tag
    return key


def _torrent_key(options: ShareOptions) -> dict[str, Any]:
    torrent = options.torrent
    return {
        "trackers": [list(tier) for tier in torrent.trackers],
        "web_seeds": list(torrent.web_seeds),
        "comment": torrent.comment,
        "signed_by": options.sign_key_id,
        "dated": torrent.creation_date is not None,
    }


def _previous_version(entry: dict[str, Any] | None, torrent_path: Path) -> int | None:
    """The version last published for the package, from the manifest or the torrent itself."""
    if entry is not None and isinstance(entry.get("version"), int):
        return int(entry["version"])
    try:
        meta = read_metainfo(str(torrent_path))
    except (OSError, RemoteError):
        return None
    return meta.info.package.version if meta.info.package is not None else None


def build_package(
    package: SharePackage,
    outdir: Path,
    options: ShareOptions,
    manifest: dict[str, Any],
    progress_for: ProgressFactory | None = None,
) -> PackageResult:
    """Create or refresh one package's torrent; updates ``manifest`` in place on success."""
    source = scan_path(package.folder, options.excludes)
    torrent_path = outdir / f"{package.package_id}.torrent"
    entry = manifest.get(package.package_id)
    content = {"folder": package.folder.name, "files": source.fingerprint(), "info": _info_key(options)}
    outer = _torrent_key(options)
    same_content = entry is not None and entry.get("content") == content
    if same_content and entry is not None and entry.get("torrent") == outer and torrent_path.is_file():
        return PackageResult(package.package_id, "unchanged", entry.get("version"), entry.get("info_hash"), torrent_path, notes=source.notes)
    previous = _previous_version(entry, torrent_path)
    if same_content and previous is not None:
        version, action = previous, "rewritten"
    elif options.version is not None:
        if previous is not None and options.version <= previous:
            raise UsageError(
                f"--version {options.version} is not above version {previous} already published for {package.package_id}"
            )
        version, action = options.version, "created" if previous is None else "updated"
    else:
        version, action = (previous + 1, "updated") if previous is not None else (1, "created")
    torrent_options = options.torrent.replace(package=PackageIdentity(package.package_id, version))
    bar = progress_for(package.package_id, source.total_size) if progress_for else nullcontext(None)
    with bar as progress:
        data, meta = build_torrent(source, torrent_options, sign_key=options.sign_key, threads=options.threads, progress=progress)
    write_atomic(torrent_path, data)
    manifest[package.package_id] = {
        "content": content,
        "torrent": outer,
        "version": version,
        "info_hash": meta.info_hash_hex,
    }
    save_manifest(outdir, manifest)
    return PackageResult(package.package_id, action, version, meta.info_hash_hex, torrent_path, notes=source.notes)


def build_share(
    share: Path,
    outdir: Path,
    options: ShareOptions,
    *,
    note: Callable[[str], None] = lambda text: None,
    report: Callable[[PackageResult], None] = lambda result: None,
    progress_for: ProgressFactory | None = None,
) -> list[PackageResult]:
    """Every package of ``share``; one package's failure is reported and the others go on."""
    if not outdir.is_dir():
        raise OutputError(f"output folder {outdir} does not exist")
    packages, notes = list_share(share)
    for text in notes:
        note(text)
    manifest, notes = load_manifest(outdir)
    for text in notes:
        note(text)
    results = []
    for package in packages:
        try:
            result = build_package(package, outdir, options, manifest, progress_for)
        except OutputError:
            raise
        except P2pdistError as exc:
            result = PackageResult(package.package_id, "failed", error=exc)
        results.append(result)
        report(result)
    return results
