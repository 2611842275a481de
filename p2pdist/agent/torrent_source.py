"""Where an agent's torrents come from: the site server's repository, and the trust check.

A torrent is used only when it parses, carries a valid signature by a configured key, names
exactly the package (and version) that was asked for, and is private. Anything else is a
``TorrentRefused`` with the reason; a repository that cannot answer is ``RepositoryUnavailable``
(worth retrying later), so the agent can tell an administrator's mistake from a network outage.
"""

from __future__ import annotations

import asyncio

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
    try:
        meta = parse_metainfo(data)
    except P2pdistError as exc:
        raise TorrentRefused(f"corrupt torrent: {exc}") from None
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
