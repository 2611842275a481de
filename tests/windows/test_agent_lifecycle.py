"""The agent as a Windows process: start, graceful stop, restart (a lease outliving it holds its
files again), and resume after a crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lane import Site, running_agent, wait_for

MIB = 1 << 20


def test_start_stop_and_restart_keep_a_complete_package_and_its_lease(site: Site, tmp_path: Path) -> None:
    files = {"setup.exe": os.urandom(3 * MIB), "data/one.cab": os.urandom(MIB + 123)}
    site.publish("LN100001", files)
    with running_agent(tmp_path / "pc", site) as agent:
        status = agent.wait_complete("LN100001")
        assert Path(status.path, "data", "one.cab").read_bytes() == files["data/one.cab"]
        assert status.bytes_from_webseed == sum(map(len, files.values()))
        lease = agent.call("acquire", "LN100001", os.getpid())  # a command runs from it meanwhile
        assert agent.stop() == 0  # the stop event: a graceful stop, exit 0
        log = agent.log.read_text()
        assert "stopping" in log and "agent stopped" in log
        assert not agent.token_file.exists()  # removed on the way out
        resume = list((tmp_path / "pc" / "state" / "resume").iterdir())
        assert resume, "no resume data saved"
        target = Path(status.path, "setup.exe")
        open(target, "r+b").close()  # no agent: nothing holds the files

        served = site.dp.bytes_sent
        agent.start()  # the same home: restart
        again = agent.call("status", "LN100001")
        again = agent.wait_complete("LN100001") if again.state != "complete" else again
        assert again.path == status.path
        assert site.dp.bytes_sent == served  # trusted from resume data: nothing fetched again
        this_run = lambda: agent.log.read_text().split("agent started")[-1]  # noqa: E731
        assert "re-hash" not in this_run().lower()

        # The lease outlived the restart, so its files are held again: no delete, no overwrite.
        wait_for(lambda: "holds its files again" in this_run(), "the lease to hold its files again")
        planted = tmp_path / "planted.exe"
        planted.write_bytes(b"MZ planted")
        with pytest.raises(PermissionError):
            os.remove(target)
        with pytest.raises(PermissionError):
            os.replace(planted, target)
        with pytest.raises(PermissionError):
            open(target, "r+b").close()
        assert target.read_bytes() == files["setup.exe"]
        agent.call("release", lease)
        with open(target, "r+b") as handle:  # released: the files may change again
            handle.write(files["setup.exe"][:1])
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
