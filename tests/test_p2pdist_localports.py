"""Loopback ports picked for a server started a moment later: below the ephemeral range, bindable, never twice."""

from __future__ import annotations

import socket

import pytest

from p2pdist.localports import DEMO_PORTS, EPHEMERAL_FLOOR, spare_port
from tests.support.ports import SUITE_PORTS, free_port


def test_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    assert DEMO_PORTS.stop <= EPHEMERAL_FLOOR and SUITE_PORTS.stop <= EPHEMERAL_FLOOR
    assert not set(DEMO_PORTS) & set(SUITE_PORTS)  # the demo inside a test run cannot collide with it
    port = spare_port()
    assert port in DEMO_PORTS
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_is_handed_out_once_per_process() -> None:
    given = [free_port() for _ in range(50)]
    assert len(set(given)) == 50 and all(port in SUITE_PORTS for port in given)


def test_a_port_in_use_is_skipped_and_a_full_range_says_so() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        with pytest.raises(OSError, match=f"no free port on 127.0.0.1 in {taken}-{taken} after 5 tries"):
            spare_port("127.0.0.1", range(taken, taken + 1), attempts=5)
