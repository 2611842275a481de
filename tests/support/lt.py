"""A libtorrent peer for interoperability tests (the PyPI wheel; never imported by p2pdist)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

lt = pytest.importorskip("libtorrent")


def session(*, port: int = 0, host: str = "127.0.0.1", announce: bool = False) -> "lt.session":
    """A plain libtorrent session on ``host``; ``announce``: it talks to the torrents' trackers
    from ``host`` and gives up on its goodbye announce after a second."""
    settings = {
        "listen_interfaces": f"{host}:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        # Plain BitTorrent: message stream encryption is not part of p2pdist's protocol scope.
        "out_enc_policy": lt.enc_policy.disabled,
        "in_enc_policy": lt.enc_policy.disabled,
        "alert_mask": 0,
    }
    if announce:
        settings.update({"outgoing_interfaces": host, "stop_tracker_timeout": 1, "announce_to_all_tiers": True})
    return lt.session(settings)


async def close(holder: list["lt.session"]) -> None:
    """Destroy the session that only ``holder`` refers to, off the event loop: its destructor
    waits for the goodbye announces, which may go to a tracker served by this very loop."""
    await asyncio.to_thread(holder.clear)


def add(ses: "lt.session", torrent: bytes, save_path: Path, *, seed_mode: bool = False) -> "lt.torrent_handle":
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bdecode(torrent))
    params.save_path = str(save_path)
    if seed_mode:
        params.flags |= lt.torrent_flags.seed_mode
    return ses.add_torrent(params)


async def wait_seeding(handle: "lt.torrent_handle", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not handle.status().is_seeding:
        if time.monotonic() > deadline:
            status = handle.status()
            raise AssertionError(f"libtorrent not seeding after {timeout} s: state {status.state}, progress {status.progress:.2f}, peers {status.num_peers}")
        await asyncio.sleep(0.1)


def listen_port(ses: "lt.session") -> int:
    return ses.listen_port()
