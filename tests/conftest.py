"""Fixtures shared by test modules. Helpers (builders, servers, clients) live in tests/support/.

The Windows lane loads this file too, so it imports nothing Linux-only at module level.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.ports import free_port

# A suite started in the background by a shell without job control inherits SIGINT ignored,
# and so would every process it starts: the tests that press Ctrl-C on a command (create,
# status --watch) would wait for an exit that never comes. The suite's children get Ctrl-C as
# on a terminal whatever started the suite.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free 127.0.0.1 port in a temporary folder (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not installed (scripts/system-deps installs it): Redis tests skipped")
        pytest.skip("redis-server binary is missing")
    pytest.importorskip("redis", reason="the redis package is not installed (test extra)")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
