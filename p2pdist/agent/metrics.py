"""Prometheus metrics of the agent, read from its live state at scrape time.

A custom collector on a private registry: nothing is counted twice in the hot path, every
figure comes from the objects that already hold it (the same numbers ``p2pdist status`` shows),
and no process-wide default registry is touched, so several agents can live in one process.
prometheus_client is imported at the first scrape: an agent nobody scrapes does not hold it
(a megabyte, on every PC).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    from p2pdist.agent.daemon import Agent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class AgentCollector:
    """A prometheus collector (it needs only ``collect``; the registry does not describe it)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from p2pdist.agent.daemon import STATES

        statuses = self.agent.list()
        received = CounterMetricFamily(
            "p2pdist_agent_received_bytes", "Verified package bytes received, by source", labels=["source"]
        )
        received.add_metric(["peers"], sum(s.bytes_from_peers for s in statuses))
        received.add_metric(["webseed"], sum(s.bytes_from_webseed for s in statuses))
        yield received
        yield CounterMetricFamily(
            "p2pdist_agent_uploaded_bytes", "Package bytes uploaded to other peers", value=sum(s.uploaded for s in statuses)
        )
        yield GaugeMetricFamily("p2pdist_agent_peers", "Connected peers over all packages", value=sum(s.peers for s in statuses))
        by_state = Counter(s.state for s in statuses)
        packages = GaugeMetricFamily("p2pdist_agent_packages", "Packages by state", labels=["state"])
        for state in STATES:
            packages.add_metric([state], by_state.get(state, 0))
        yield packages
        rates = GaugeMetricFamily("p2pdist_agent_rate_bytes_per_second", "Transfer rate", labels=["direction"])
        rates.add_metric(["download"], sum(s.download_rate for s in statuses))
        rates.add_metric(["upload"], sum(s.upload_rate for s in statuses))
        yield rates
        yield GaugeMetricFamily(
            "p2pdist_agent_cache_bytes", "Size of the packages in the cache", value=sum(s.size for s in statuses if s.info_hash)
        )
        yield GaugeMetricFamily("p2pdist_agent_packages_in_use", "Packages a running command holds a lease on", value=len(self.agent.in_use()))


class AgentMetrics:
    """One registry per agent; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._registry: CollectorRegistry | None = None

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self._registry is None:
            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(AgentCollector(self.agent))
        return generate_latest(self._registry)
