"""Picking a loopback port for a server that another process will bind a moment later.

Binding port 0 and closing the socket hands out a port from the kernel's ephemeral range, the
same range every outgoing connection on the machine draws from. Until the server binds it, any
process may connect from that port and, once it closes, leave it in TIME_WAIT; a server without
SO_REUSEADDR (every asyncio server on Windows, and Windows programs under Wine) then cannot bind
it. Ports below the ephemeral ranges of Linux (32768-60999 by default) and Windows (49152-65535)
are never handed out that way, so a port picked there stays free unless someone binds it by
number. Callers that run side by side (two test suites) pass disjoint ranges.
"""

from __future__ import annotations

import random
import socket
import threading

EPHEMERAL_FLOOR = 32768  # Linux's default ip_local_port_range starts here, Windows's at 49152
DEMO_PORTS = range(10000, 20000)

_given: set[tuple[str, int]] = set()
_given_lock = threading.Lock()
_random = random.SystemRandom()  # not the module's generator, which a test framework may seed


def spare_port(host: str = "127.0.0.1", ports: range = DEMO_PORTS, attempts: int = 200) -> int:
    """A port of ``ports`` that ``host`` can bind now and that this process has not handed out."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        port = _random.choice(ports)
        with _given_lock:
            if (host, port) in _given:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((host, port))  # no SO_REUSEADDR: a port in TIME_WAIT fails here too
                except OSError:
                    continue
            _given.add((host, port))
            return port
    raise OSError(f"no free port on {host} in {ports.start}-{ports.stop - 1} after {attempts} tries")
