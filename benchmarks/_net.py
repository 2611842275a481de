"""Loopback helpers the benchmark scripts share: a free port, and waiting for a listener."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
