"""The one way tests pick a port for a server started a moment later (often in another process).

Below the ephemeral range (see p2pdist/localports.py): the Linux suite and the Windows lane run
side by side and make thousands of connections, so a port got by binding port 0 may be in use,
or in TIME_WAIT, by the time the server binds it. Each suite draws from its own slice, so the
two never pick the same port; the demo draws from a third (p2pdist.localports.DEMO_PORTS).
"""

from __future__ import annotations

import sys

from p2pdist.localports import spare_port

SUITE_PORTS = range(26000, 32000) if sys.platform == "win32" else range(20000, 26000)


def free_port(host: str = "127.0.0.1") -> int:
    """A port ``host`` can bind, that this test run has not handed out before."""
    return spare_port(host, SUITE_PORTS)
