"""Loopback helpers the benchmark scripts share: a free port, and waiting for a listener."""

from __future__ import annotations

import socket
import time

from p2pdist.localports import spare_port


def free_port() -> int:
    """A port below the ephemeral range, so no outgoing connection takes it before the server binds."""
    return spare_port()


def wait_listening(port: int, timeout: float = 30.0) -> None:
    """Return once something accepts on 127.0.0.1:``port``; exit the script after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on port {port} after {timeout} s")
            time.sleep(0.05)
