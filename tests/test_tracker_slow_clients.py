"""Slow and greedy clients against ``p2pdist server`` as a real process on 127.0.0.0/8.

What one client can hold is bounded: a request head has a deadline from the accept that bytes
do not restart (trickling clients, idle sockets, on the front's connections and on those
aiohttp serves), one address holds at most ``connections_per_address`` sockets (the excess is
closed at accept), and the process raises its soft open-file limit to the hard one at start.
Every bound below is a generous ceiling: ``head_timeout`` is 1 s, a hang is 60 s
(``keepalive_timeout``), and the test waits up to ``CEILING`` for the server to act.
"""

from __future__ import annotations

import resource
import socket
import time
import urllib.request
from pathlib import Path

from tests.support.processes import CAP, server_process
from tests.support.rawhttp import Conversation, get
from tests.support.siteserver import TOKEN, announce_target, signed_torrent

CEILING = 15.0  # seconds the server gets to close what it must close (head_timeout is 1 s)


def publish(port: int, torrent: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/packages", data=torrent, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def closed_by_server(sock: socket.socket, within: float = CEILING, trickle: bytes = b"", every: float = 0.1) -> bool:
    """True when the server closes ``sock`` within ``within`` s, while ``trickle`` is sent a
    byte every ``every`` s (bytes that, with an idle timer, would keep the socket open)."""
    sock.settimeout(every)
    end = time.monotonic() + within
    sent = 0
    while time.monotonic() < end:
        try:
            if sent < len(trickle):
                sock.send(trickle[sent : sent + 1])
                sent += 1
            if sock.recv(1) == b"":
                return True
        except (TimeoutError, socket.timeout):
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def announce_on(c: Conversation, n: int) -> int:
    c.send(get(announce_target(n, 7000 + n)))
    return c.response()[0]


def test_slow_and_greedy_clients_are_bounded(tmp_path: Path) -> None:
    with server_process(tmp_path) as (process, port):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line  # soft raised from 256 to hard

        assert publish(port, signed_torrent()) == 201
        # One address holds at most CAP connections: these four stay usable...
        held = [Conversation.open(port, "127.1.0.50") for _ in range(CAP)]
        try:
            assert [announce_on(c, n) for n, c in enumerate(held)] == [200] * CAP
            # ...and a fifth is closed at accept, long before any deadline could close it.
            extra = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.1.0.50", 0))
            with extra:
                assert closed_by_server(extra, within=CEILING)
            assert [announce_on(c, 10 + n) for n, c in enumerate(held)] == [200] * CAP  # still held
            other = Conversation.open(port, "127.1.0.51")  # another address is not affected
            assert announce_on(other, 20) == 200
            other.close()
            held.pop().close()  # a freed slot can be used again
            deadline = time.monotonic() + CEILING
            while True:
                again = Conversation.open(port, "127.1.0.50")
                try:
                    if announce_on(again, 30) == 200:
                        break
                except (ConnectionError, OSError):
                    assert time.monotonic() < deadline, "a freed slot was never given back"
                    time.sleep(0.1)
                finally:
                    again.close()
        finally:
            for c in held:
                c.close()

        head = get(announce_target(40, 7040))[:-4] + b"X-Pad: " + b"a" * 4000  # never ends in time
        # A head trickled a byte every 0.1 s is closed on its deadline, not kept by its bytes.
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.1.0.60", 0)) as slow:
            assert closed_by_server(slow, trickle=head)
        # A socket that never sends a byte is closed too (keepalive_timeout is 60 s).
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.1.0.61", 0)) as idle:
            assert closed_by_server(idle)
        # On a connection aiohttp serves (after an API request), the next head has a deadline too.
        api = Conversation.open(port, "127.1.0.62")
        try:
            api.send(get("/api/packages"))
            assert api.response()[0] == 200
            assert closed_by_server(api.sock, trickle=head)
        finally:
            api.close()
        # A request body trickled to a handler gets a deadline too (a report: anyone may send one).
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.1.0.65", 0)) as body:
            body.sendall(b"POST /api/report HTTP/1.1\r\nHost: t\r\nContent-Length: 400\r\n\r\n")
            assert closed_by_server(body, trickle=b"{" + b" " * 399)
        # A kept-alive connection that starts its next head and trickles it is closed as well.
        kept = Conversation.open(port, "127.1.0.63")
        try:
            assert announce_on(kept, 50) == 200
            assert closed_by_server(kept.sock, trickle=head)
        finally:
            kept.close()

        survivor = Conversation.open(port, "127.1.0.64")
        try:
            assert announce_on(survivor, 60) == 200
        finally:
            survivor.close()
        assert process.poll() is None
