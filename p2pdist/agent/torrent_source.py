"""Where an agent's torrents come from: the site server's repository, and the trust check.

A torrent is used only when it parses, carries a valid signature by a configured key, names
exactly the package (and version) that was asked for, and is private. Anything else is a
``TorrentRefused`` with the reason; a repository that cannot answer is ``RepositoryUnavailable``
(worth retrying later), so the agent can tell an administrator's mistake from a network outage.

At start the agent checks again every torrent it stored. Verifying the Ed25519 signature means
loading cryptography (7 MiB resident, for the whole life of an idle agent) only to learn what it
learnt when it stored the file; so the file it stored carries a record beside it, the SHA-256 of
its bytes and the key that signed it, and an unchanged torrent whose key is still trusted needs
no new signature check. The record is no secret and needs none: who can rewrite the state
folder (SYSTEM and Administrators alone) can rewrite agent.toml's keys too; what the record
must catch, a changed file or a key no longer trusted, it does.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

from p2pdist.errors import P2pdistError, RemoteError, SignatureError
from p2pdist.httpio import read_capped
from p2pdist.metainfo import Metainfo, parse_metainfo
from p2pdist.metainfo.signing import require_valid_signature
from p2pdist.outcomes import Problem


class TorrentRefused(RemoteError):
    """The repository's answer is not a torrent this agent may use (the reason says why;
    ``kind`` is the ``Problem``: not published, a bad signature, or another refusal)."""

    def __init__(self, message: str, kind: Problem = Problem.TORRENT_REFUSED) -> None:
        super().__init__(message)
        self.kind = kind


class RepositoryUnavailable(RemoteError):
    """The repository could not be reached or failed (network error, 5xx)."""

    kind = Problem.REPOSITORY_UNREACHABLE


async def download_torrent(
    http: aiohttp.ClientSession, base: str, package_id: str, version: int | None, *, limit: int, timeout: float
) -> bytes:
    """The torrent of ``package_id`` (its current version, or ``version``) from the repository."""
    url = f"{base}/packages/{package_id}.torrent" if version is None else f"{base}/packages/{package_id}/{version}.torrent"
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as reply:
            body = await read_capped(reply.content, limit)
            status = reply.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise RepositoryUnavailable(f"repository {base} unreachable: {exc or type(exc).__name__}") from None
    if status == 404:
        what = package_id if version is None else f"{package_id} v{version}"
        raise TorrentRefused(f"{what} is not published in the repository", Problem.NOT_PUBLISHED)
    if status >= 500:
        raise RepositoryUnavailable(f"repository {base} failed: HTTP {status}")
    if status != 200:
        raise TorrentRefused(f"repository answered HTTP {status} for {url}")
    if body is None:
        raise TorrentRefused(f"torrent from the repository is larger than {limit} bytes")
    return body


def check_torrent(data: bytes, keys: tuple[bytes, ...], package_id: str, version: int | None) -> Metainfo:
    """Parse and trust-check a torrent for ``package_id`` (and ``version`` if given)."""
    return recheck_stored(data, keys, package_id, version, vouch=None)


def vouch_for(data: bytes, meta: Metainfo) -> str:
    """The record kept beside a stored torrent that passed ``check_torrent``."""
    assert meta.signature is not None, "only a checked torrent is vouched for"
    return f"{hashlib.sha256(data).hexdigest()} {meta.signature.public_key.hex()}"


def recheck_stored(data: bytes, keys: tuple[bytes, ...], package_id: str, version: int | None, vouch: str | None) -> Metainfo:
    """``check_torrent``, minus the Ed25519 check when ``vouch`` (the record stored with the
    torrent) matches these bytes and names a key still trusted."""
    try:
        meta = parse_metainfo(data)
    except P2pdistError as exc:
        raise TorrentRefused(f"corrupt torrent: {exc}") from None
    vouched = (
        vouch is not None and meta.signature is not None and meta.info.package is not None
        and meta.signature.public_key in keys and vouch == vouch_for(data, meta)
    )  # fmt: skip
    if not vouched:
        try:
            require_valid_signature(meta, keys)
        except SignatureError as exc:
            raise TorrentRefused(str(exc), Problem.SIGNATURE) from None
    identity = meta.info.package
    if identity is None or identity.package_id != package_id:
        raise TorrentRefused(f"torrent is for {identity or 'no package'}, not {package_id}")
    if version is not None and identity.version != version:
        raise TorrentRefused(f"torrent is for {identity}, not version {version}")
    if not meta.info.private:
        raise TorrentRefused("torrent is not private (packages are shared only through the tracker)")
    return meta
