"""libtorrent announces to the site server and meets only peers of its own site.

Real listening sockets stand in for peers at HQ floor A, HQ floor B, the HQ site seed and the
branch office; libtorrent runs bound to 127.0.1.9 (HQ floor A). It must connect to the three
HQ endpoints and never to the branch one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from p2pdist.tracker.announce import parse_announce_response
from tests.support.ports import free_port
from tests.support.siteserver import (
    SITES,
    announce_url,
    info_hash_of,
    make_settings,
    peer_id,
    publish,
    running,
    session_from,
    signed_torrent,
)

lt = pytest.importorskip("libtorrent")

LT_ADDRESS = "127.0.1.9"


class Listener:
    """A TCP endpoint that records who connected and hangs up after the handshake bytes."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.sources: list[str] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> Listener:
        self.server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sources.append(writer.get_extra_info("peername")[0])
        try:
            await asyncio.wait_for(reader.read(68), 2)
        except (TimeoutError, ConnectionError):
            pass
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def lt_session(port: int) -> lt.session:
    pack = {
        "listen_interfaces": f"{LT_ADDRESS}:{port}",
        "outgoing_interfaces": LT_ADDRESS,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": lt.alert.category_t.all_categories,
        "announce_to_all_tiers": True,
        "stop_tracker_timeout": 1,
    }
    return lt.session(pack)


async def test_libtorrent_gets_only_peers_of_its_own_site(tmp_path: Path) -> None:
    floor_a, floor_b, seed, branch = [
        await Listener(h).start() for h in ("127.0.1.5", "127.0.2.5", "127.0.0.201", "127.1.0.5")
    ]
    sites = (replace(SITES[0], seeds=(f"127.0.0.201:{seed.port}",)), SITES[1])
    try:
        # public_url "": the torrent below names this server by its port, as the publish reaches it
        async with running(make_settings(tmp_path / "server", sites=sites, public_url="")) as server:
            torrent = signed_torrent("PS1000CD", 1, announce=server.url + "/announce")
            assert (await publish(server, torrent)).status == 201
            ih = info_hash_of(torrent)
            for n, listener in enumerate((floor_a, floor_b, branch)):
                async with session_from(listener.host) as client:
                    async with client.get(announce_url(server, ih, peer_id(n), listener.port, left=0)) as r:
                        assert r.status == 200

            port = free_port(LT_ADDRESS)
            session = lt_session(port)
            params = lt.add_torrent_params()
            params.ti = lt.torrent_info(lt.bdecode(torrent))
            params.save_path = str(tmp_path / "lt")
            handle = session.add_torrent(params)
            replies: list[int] = []
            deadline = time.monotonic() + 15
            hq = (floor_a, floor_b, seed)
            while time.monotonic() < deadline and not (replies and all(l.sources for l in hq)):
                for alert in session.pop_alerts():
                    if isinstance(alert, lt.tracker_reply_alert):
                        replies.append(alert.num_peers)
                    elif isinstance(alert, lt.tracker_error_alert):
                        pytest.fail(f"libtorrent tracker error: {alert.message()}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # room for a wrong connection to show up
            assert replies and replies[0] == 3, replies
            assert all(l.sources == [LT_ADDRESS] * len(l.sources) and l.sources for l in hq)
            assert branch.sources == []

            # libtorrent was registered at HQ floor A from its source address: a new floor-A
            # peer is offered libtorrent first (same subnet), and a branch peer never sees it.
            async with session_from("127.0.1.10") as client:
                async with client.get(announce_url(server, ih, peer_id(9), 7009)) as r:
                    offered = parse_announce_response(await r.read()).peers
            assert offered[0] in ((LT_ADDRESS, port), ("127.0.1.5", floor_a.port))
            assert (LT_ADDRESS, port) in offered
            async with session_from("127.1.0.11") as client:
                async with client.get(announce_url(server, ih, peer_id(10), 7010)) as r:
                    assert parse_announce_response(await r.read()).peers == (("127.1.0.5", branch.port),)
            session.remove_torrent(handle)
            holder = [session]
            del session
            # The destructor sends "stopped" to our server on this loop: let it run elsewhere.
            await asyncio.to_thread(holder.clear)
    finally:
        for listener in (floor_a, floor_b, seed, branch):
            await listener.close()
