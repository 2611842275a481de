"""Parsing ``HOST:PORT`` / ``[IPv6]:PORT`` peer addresses given on the command line."""

from __future__ import annotations

from p2pdist.errors import UsageError


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise UsageError(f"peer address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"IPv6 peer address {text!r} needs brackets: [ADDRESS]:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"peer address {text!r} has no valid port (1-65535)")
    return host, int(port_text)
