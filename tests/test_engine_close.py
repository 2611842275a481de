"""Closing a session closes every connection, even one accepted in the moment it closes.

asyncio sets up an accepted connection one loop turn after the accept; a Server.close() in
that turn leaves the socket open and unowned (CPython gh-109564, gh-155934). A PC's agent
closes its session while peers keep dialling it, so each close lands somewhere in that window.
"""

from __future__ import annotations

import pytest

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from tests.support.closing import close_after_connect


@pytest.mark.parametrize("turns", range(6))
async def test_a_connection_accepted_while_the_session_closes_is_closed(turns: int) -> None:
    session = Session(EngineSettings(listen_host="127.0.0.1", listen_port=0))
    await session.start()
    assert await close_after_connect(session.port, turns, session.close) == []
    assert session.connection_count() == 0
