"""The agent as a Windows process: start, graceful stop, restart, and resume after a crash."""

from __future__ import annotations

import os
from pathlib import Path

from lane import Site, running_agent, wait_for

MIB = 1 << 20


def test_start_stop_and_restart_keep_a_complete_package_without_fetching_it_again(site: Site, tmp_path: Path) -> None:
    files = {"setup.exe": os.urandom(3 * MIB), "data/one.cab": os.urandom(MIB + 123)}
    site.publish("LN100001", files)
    with running_agent(tmp_path / "pc", site) as agent:
        status = agent.wait_complete("LN100001")
        assert Path(status.path, "data", "one.cab").read_bytes() == files["data/one.cab"]
        assert status.bytes_from_webseed == sum(map(len, files.values()))
        assert agent.stop() == 0  # the stop event: a graceful stop, exit 0
        log = agent.log.read_text()
        assert "stopping" in log and "agent stopped" in log
        assert not agent.token_file.exists()  # removed on the way out
        resume = list((tmp_path / "pc" / "state" / "resume").iterdir())
        assert resume, "no resume data saved"

        served = site.dp.bytes_sent
        agent.start()  # the same home: restart
        again = agent.call("status", "LN100001")
        again = agent.wait_complete("LN100001") if again.state != "complete" else again
        assert again.path == status.path
        assert site.dp.bytes_sent == served  # trusted from resume data: nothing fetched again
        assert "re-hash" not in agent.log.read_text().split("agent started")[-1].lower()
        assert agent.stop() == 0


def test_resume_after_termination_fetches_only_what_is_missing(site: Site, tmp_path: Path) -> None:
    size = 8 * MIB
    site.publish("LN100002", {"big.bin": os.urandom(size)})
    before = site.dp.bytes_sent
    site.dp.rate = 2 * MIB  # so that the download is surely cut short
    with running_agent(tmp_path / "pc", site) as agent:
        agent.call("ensure", "LN100002")
        wait_for(lambda: agent.call("status", "LN100002").progress >= 0.3, "a third of the download", timeout=90)
        agent.kill()  # TerminateProcess: no stop, no resume data saved since the start
        site.dp.rate = 0
        fetched_first = site.dp.bytes_sent - before
        assert 0 < fetched_first < size

        agent.start()
        status = agent.wait_complete("LN100002", timeout=120)
        total = site.dp.bytes_sent - before
        assert Path(status.path, "big.bin").read_bytes() == (site.dp.share / "LN100002" / "big.bin").read_bytes()
        # The pieces on disk are hashed again at the start and kept: the package did not come twice.
        assert total < 2 * size - MIB, (fetched_first, total)
        assert agent.stop() == 0
