"""The site server's ``/metrics``: the console's figures in the Prometheus text format.

Built per scrape from one ``console.Console`` snapshot (the ledger's counters, the tracker's
live peers), on a private registry like the agent's, so nothing is counted in the hot path.
Labels are ``package``, ``version`` ("" for a package asked for without a torrent), ``site``,
and ``state``, ``kind``, ``role`` or ``source``; kinds are the bounded ``outcomes.Problem``
list, so the series stay bounded by packages x sites.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from p2pdist.outcomes import State
from p2pdist.tracker.console import WINDOWS, Console, savings

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Snapshot(Collector):
    def __init__(self, console: Console, peers: int) -> None:
        self.console = console
        self.peers = peers

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        base = ["package", "version", "site"]
        agents = GaugeMetricFamily("p2pdist_site_agents", "PCs whose last report of the package is in this state", labels=[*base, "state"])
        problems = GaugeMetricFamily("p2pdist_site_agent_problems", "PCs not complete, by problem kind", labels=[*base, "kind"])
        in_use = GaugeMetricFamily("p2pdist_site_agents_in_use", "PCs running a program from the package", labels=base)
        peers = GaugeMetricFamily("p2pdist_site_peers", "Live tracker registrations", labels=[*base, "role"])
        received = CounterMetricFamily("p2pdist_site_received_bytes", "Package bytes the PCs received, by source", labels=[*base, "source"])
        uploaded = CounterMetricFamily("p2pdist_site_uploaded_bytes", "Package bytes the PCs sent to their peers", labels=base)
        per_site: dict[str, dict[int, list[int]]] = {}
        for (package, version, site), figures in sorted(self.console.rows.items()):
            names = [package, "" if version < 0 else str(version), site]
            tally = figures.tally
            if tally.agents:
                for state in State:
                    agents.add_metric([*names, str(state)], tally.state(state))
                for kind, count in tally.errors.items():
                    problems.add_metric([*names, kind], count)
                in_use.add_metric(names, tally.in_use)
            if figures.seeders or figures.leechers:
                peers.add_metric([*names, "seeder"], figures.seeders)
                peers.add_metric([*names, "leecher"], figures.leechers)
            received.add_metric([*names, "peers"], tally.from_peers)
            received.add_metric([*names, "webseed"], tally.from_webseed)
            uploaded.add_metric(names, tally.uploaded)
            windows = per_site.setdefault(site, {days: [0, 0] for days in WINDOWS})
            for days in WINDOWS:
                windows[days][0] += figures.windows[days][0]
                windows[days][1] += figures.windows[days][1]
        yield from (agents, problems, in_use, peers, received, uploaded)
        ratio = GaugeMetricFamily("p2pdist_site_savings_ratio", "Share of downloaded bytes that came from peers", labels=["site", "window"])
        for site, windows in sorted(per_site.items()):
            for days, (from_peers, from_webseed) in windows.items():
                value = savings(from_peers, from_webseed)
                if value is not None:
                    ratio.add_metric([site, f"{days}d"], value)
        yield ratio
        yield GaugeMetricFamily("p2pdist_tracker_registrations", "Peers registered with the tracker", value=self.peers)


def render(console: Console, peers: int) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(console, peers))
    return generate_latest(registry)
