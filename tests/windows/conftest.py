"""The Windows lane: these tests run on Windows CPython only (scripts/test-windows runs them
under Wine on Linux); on any other system the folder is not even collected."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

if sys.platform != "win32":
    collect_ignore_glob = ["*.py"]
else:
    from lane import AgentProcess, DistributionPoint, Site, running_agent

    @pytest.fixture(scope="session")
    def site() -> Iterator[Site]:
        """One site server and one distribution point for the whole lane; each test publishes
        its own PackageIDs."""
        with tempfile.TemporaryDirectory(prefix="p2pdist-lane-") as name:
            work = Path(name)
            (work / "share").mkdir()
            dp = DistributionPoint(work / "share")
            dp.start()
            server = Site(work, dp)
            try:
                server.start()
                yield server
            finally:
                server.stop()
                dp.stop()

    @pytest.fixture(scope="session")
    def pc(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
        """One agent for the tests whose subject is not its start or stop (the wrapper, leases,
        the cache's file rules): an agent start is some seconds under Wine. Cleanup runs every
        second, for the cache tests. Each test uses PackageIDs of its own."""
        with running_agent(tmp_path_factory.mktemp("pc"), site, extra="[cache]\ncleanup_interval = 1.0\n") as agent:
            yield agent


def pytest_report_header(config: pytest.Config) -> str:
    if sys.platform != "win32":
        return "Windows lane: not on Windows, nothing collected"
    import ctypes

    ntdll = ctypes.WinDLL("ntdll")
    if hasattr(ntdll, "wine_get_version"):
        ntdll.wine_get_version.restype = ctypes.c_char_p
        return f"Windows lane: Windows CPython {sys.version.split()[0]} under Wine {ntdll.wine_get_version().decode()}"
    return f"Windows lane: Windows CPython {sys.version.split()[0]}"
