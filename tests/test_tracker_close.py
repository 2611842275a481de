"""Stopping the site server closes every connection, even one accepted as it stops.

asyncio sets an accepted connection up one loop turn after the accept; a Server.close() in
that turn leaves the socket open and unowned (CPython gh-109564, gh-155934). Clients announce
"stopped" as they shut down, often just as the server does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pdist.tracker.server import start
from p2pdist.tracker.web import build_app
from tests.support.closing import close_after_connect
from tests.support.siteserver import make_settings


@pytest.mark.parametrize("turns", range(6))
async def test_a_connection_accepted_while_the_server_stops_is_closed(tmp_path: Path, turns: int) -> None:
    settings = make_settings(tmp_path)
    server = await start(build_app(settings), settings.listen, "127.0.0.1", 0)
    assert await close_after_connect(server.port, turns, server.stop) == []
