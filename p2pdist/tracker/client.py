"""Admin side of the repository API: publish, retire and pre-stage over HTTP with the admin token."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp

from p2pdist.errors import InputError, RemoteError, UsageError

TOKEN_ENV = "P2PDIST_ADMIN_TOKEN"
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15)


class ServerRefused(RemoteError):
    """The server answered with an error; the message is the server's reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"server refused ({status}): {reason}")
        self.status = status
        self.reason = reason


def read_token(token_file: Path | None) -> str:
    """The admin token from ``token_file``, else from $P2PDIST_ADMIN_TOKEN."""
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise InputError(f"cannot read token file {token_file}: {exc.strerror}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(f"no admin token: pass --token-file or set {TOKEN_ENV}")
    return token


async def _call(method: str, url: str, token: str, **kwargs: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            async with session.request(method, url, headers=headers, **kwargs) as response:
                text = await response.text()
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
                if response.status >= 400:
                    reason = payload.get("error") if isinstance(payload, dict) else None
                    raise ServerRefused(response.status, str(reason or text.strip()[:300] or response.reason))
                if not isinstance(payload, dict):
                    raise RemoteError(f"server sent no JSON object (HTTP {response.status})")
                return payload
    except aiohttp.ClientError as exc:
        raise RemoteError(f"cannot reach {url}: {exc}") from None
    except TimeoutError:
        raise RemoteError(f"no answer from {url} in time") from None


async def publish(server: str, torrent: bytes, token: str) -> dict[str, Any]:
    url = server.rstrip("/") + "/api/packages"
    return await _call("POST", url, token, data=torrent, headers={"Content-Type": "application/x-bittorrent"})


async def retire(server: str, package_id: str, version: int | None, token: str) -> dict[str, Any]:
    url = f"{server.rstrip('/')}/api/packages/{package_id}/retire"
    body = {} if version is None else {"version": version}
    return await _call("POST", url, token, json=body)


async def prestage(server: str, package_id: str, sites: list[str], version: int | None, at: str | None, token: str) -> dict[str, Any]:
    url = f"{server.rstrip('/')}/api/packages/{package_id}/prestage"
    body: dict[str, Any] = {"sites": sites, **({"version": version} if version is not None else {}), **({"at": at} if at else {})}
    return await _call("POST", url, token, json=body)


async def cancel_prestage(server: str, package_id: str, sites: list[str] | None, version: int | None, token: str) -> dict[str, Any]:
    url = f"{server.rstrip('/')}/api/packages/{package_id}/prestage"
    body: dict[str, Any] = {**({"sites": sites} if sites else {}), **({"version": version} if version is not None else {})}
    return await _call("DELETE", url, token, json=body)


async def prestage_orders(server: str, package_id: str | None, token: str) -> dict[str, Any]:
    base = server.rstrip("/")
    url = f"{base}/api/packages/{package_id}/prestage" if package_id else f"{base}/api/prestage"
    return await _call("GET", url, token)
