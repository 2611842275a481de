"""Which site and location an address belongs to, and which address a request really came from.

A peer's site decides which peers it meets, so it is taken from the packet's source address,
never from what the client says: ``X-Forwarded-For`` and the ``ip=`` parameter are believed
only when the request arrives from a configured proxy. Longest prefix wins, so a branch office
subnet carved out of a larger site subnet lands in the branch.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2pdist.config import ConfigError
from p2pdist.tracker.settings import SiteSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CACHE_LIMIT = 65536


@dataclass(frozen=True, slots=True)
class Place:
    """Where a client sits: its address, site (None: in no site), location and subnet key.

    ``packed`` (the address as 4 or 16 bytes) and ``group`` ((location, subnet), the key the
    peer store groups peers by) are worked out once per address, since places are cached.
    """

    address: str
    site: str | None
    location: str = ""
    subnet: str = ""  # /24 (IPv4) or /64 (IPv6): peers sharing it are preferred first
    packed: bytes = b""
    group: tuple[str, str] = ("", "")


def normalize_address(text: str) -> str:
    """Canonical text of an IP address; IPv4-mapped IPv6 becomes IPv4. ValueError if not an IP."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def subnet_key(address: str) -> str:
    if ":" in address:
        return ipaddress.IPv6Address(address).packed[:8].hex()
    return address.rpartition(".")[0]


def parse_endpoint(text: str, where: str) -> tuple[str, int]:
    """``1.2.3.4:6881`` or ``[::1]:6881`` -> (address, port); ConfigError naming ``where``."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
        if not sep or not 1 <= port <= 65535:
            raise ValueError
        return normalize_address(host), port
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not address:port") from None


def _network(text: str, where: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a subnet") from None


class SiteMap:
    """Subnet -> (site, location) lookup, proxy trust and each site's configured seeds."""

    def __init__(self, sites: tuple[SiteSettings, ...], default_site: str = "", proxies: tuple[str, ...] = ()) -> None:
        rules: list[tuple[Network, str, str]] = []
        self.seeds: dict[str, tuple[tuple[str, int], ...]] = {}
        # (site, location) -> the networks its agents may dial; ("site", "") for the whole site.
        self.networks: dict[tuple[str, str], tuple[str, ...]] = {}
        names = set()
        for i, site in enumerate(sites):
            if not site.name or site.name in names:
                raise ConfigError(f"sites[{i}].name: empty or duplicate site name {site.name!r}")
            names.add(site.name)
            rules += [(_network(s, f"sites[{i}].subnets"), site.name, "") for s in site.subnets]
            for j, location in enumerate(site.locations):
                where = f"sites[{i}].locations[{j}]"
                if not location.name:
                    raise ConfigError(f"{where}.name: empty location name")
                rules += [(_network(s, f"{where}.subnets"), site.name, location.name) for s in location.subnets]
            self.seeds[site.name] = tuple(parse_endpoint(s, f"sites[{i}].seeds") for s in site.seeds)
            self._add_networks(site, rules)
        if default_site and default_site not in names:
            self.seeds.setdefault(default_site, ())
        rules.sort(key=lambda rule: rule[0].prefixlen, reverse=True)
        self._rules = rules
        self.site_names = tuple(sorted(names | ({default_site} if default_site else set())))
        self.default_site = default_site or None
        self._proxies = tuple(_network(p, "proxies") for p in proxies)
        self._cache: dict[str, Place] = {}
        self._canonical: dict[str, str] = {}  # socket address text -> canonical form
        self._by_source: dict[str, Place] = {}  # socket address text -> place (no proxies)

    def _add_networks(self, site: SiteSettings, rules: list[tuple[Network, str, str]]) -> None:
        """What the site server tells a site's agents they may dial: the site's subnets (with an
        isolated site, the asker's location's), plus the site's configured seeds wherever they are."""
        seeds = [str(ipaddress.ip_network(host)) for host, _ in self.seeds[site.name]]
        whole = [str(net) for net, name, _ in rules if name == site.name]
        self.networks[(site.name, "")] = tuple(dict.fromkeys(whole + seeds))
        for location in site.locations:
            own = [str(net) for net, name, loc in rules if name == site.name and loc == location.name]
            self.networks[(site.name, location.name)] = tuple(dict.fromkeys((own if site.isolate_locations else whole) + seeds))

    def place_of(self, address: str) -> Place:
        """The site and location of a canonical address (see ``normalize_address``)."""
        place = self._cache.get(address)
        if place is not None:
            return place
        ip = ipaddress.ip_address(address)
        site, location = self.default_site, ""
        for network, rule_site, rule_location in self._rules:
            if ip.version == network.version and ip in network:
                site, location = rule_site, rule_location
                break
        subnet = subnet_key(address)
        place = Place(address, site, location, subnet, ip.packed, (location, subnet))
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[address] = place
        return place

    def locate(self, source: str, forwarded_for: str | None = None, ip_param: str | None = None) -> Place:
        """The place of a request from socket address ``source`` (see ``client_address``).

        Without proxies this is one dictionary lookup per request. ValueError if ``source`` is
        not an IP address.
        """
        if not self._proxies:
            place = self._by_source.get(source)
            if place is None:
                place = self.place_of(self.client_address(source))
                if len(self._by_source) >= CACHE_LIMIT:
                    self._by_source.clear()
                self._by_source[source] = place
            return place
        return self.place_of(self.client_address(source, forwarded_for, ip_param))

    @property
    def has_proxies(self) -> bool:
        return bool(self._proxies)

    def is_proxy(self, address: str) -> bool:
        if not self._proxies:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in self._proxies)

    def client_address(self, source: str, forwarded_for: str | None = None, ip_param: str | None = None) -> str:
        """The client's address: the socket's peer, unless that is a trusted proxy.

        From a proxy, the rightmost X-Forwarded-For entry that is not itself a proxy wins, then
        ``ip=``; anything unparsable is ignored and the proxy's own address is used.
        """
        canonical = self._canonical.get(source)
        if canonical is None:
            canonical = normalize_address(source)
            if len(self._canonical) >= CACHE_LIMIT:
                self._canonical.clear()
            self._canonical[source] = canonical
        source = canonical
        if not self._proxies or not self.is_proxy(source):
            return source
        if forwarded_for:
            for item in reversed(forwarded_for.split(",")[-16:]):
                try:
                    address = normalize_address(item)
                except ValueError:
                    break
                if not self.is_proxy(address):
                    return address
        if ip_param:
            try:
                return normalize_address(ip_param)
            except ValueError:
                pass
        return source
