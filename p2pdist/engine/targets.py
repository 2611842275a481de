"""Which peer addresses we may dial.

Trackers and peers name the addresses an agent connects to, and every PC of a site runs an
agent: whoever can put an address in a peer list could point a whole site at one host. So a
target must pass two rules before it is dialled: its port is not a privileged one (below
``min_port``: ssh, smtp, a domain controller's services; agents listen on 6881 and above), and
its address lies in the allowed networks, when any are known (the configured
``peer_networks`` and, once the site server names them, the site's own subnets: peers of other
sites are never ours to dial). Pure: no I/O, no resolution; a host name is allowed only while
no network rule applies, since checking it would mean resolving it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings (``10.1.0.0/16``, a bare address) as networks; ValueError names a bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not a network (CIDR) or address") from None
    return tuple(networks)


class DialPolicy:
    """The rules above; ``refusal`` says why an address may not be dialled, or None."""

    def __init__(self, *, min_port: int = 1024, networks: Iterable[str] = (), site_networks: Iterable[str] = ()) -> None:
        self.min_port = min_port
        self.networks = parse_networks(networks)
        self.site_networks = parse_networks(site_networks)

    def with_site_networks(self, site_networks: Iterable[str]) -> DialPolicy:
        """The same rules, narrowed to the site's subnets (empty: the site named none)."""
        policy = DialPolicy(min_port=self.min_port)
        policy.networks = self.networks
        policy.site_networks = parse_networks(site_networks)
        return policy

    def refusal(self, address: tuple[str, int]) -> str | None:
        host, port = address
        if not 0 < port < 65536:
            return f"port {port} is not a TCP port"
        if port < self.min_port:
            return f"port {port} is below {self.min_port} (privileged services)"
        if not self.networks and not self.site_networks:
            return None
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return f"{host} is not an IP address and peer networks are set"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.networks and not any(ip in net for net in self.networks):
            return f"{ip} is outside peer_networks"
        if self.site_networks and not any(ip in net for net in self.site_networks):
            return f"{ip} is outside this site's subnets"
        return None
