"""The cache under Windows file rules: a file that another process holds open cannot be
replaced or deleted. Removal and repair meet such files and must cope, and lose nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lane import AgentProcess, Site, wait_for
from p2pdist.agent.pins import hold

MIB = 1 << 20


@pytest.fixture
def agent(pc: AgentProcess) -> AgentProcess:
    return pc  # the lane's shared agent: cleanup every second


def test_removal_of_a_package_with_an_open_file_finishes_once_it_is_closed(site: Site, agent: AgentProcess) -> None:
    site.publish("LN100020", {"a.bin": os.urandom(MIB), "b.bin": os.urandom(MIB)})
    status = agent.wait_complete("LN100020")
    folder = agent.cache / status.info_hash
    with open(Path(status.path, "a.bin"), "rb"):  # an antivirus scanner, Explorer, a user
        agent.call("remove", "LN100020")
        assert Path(status.path, "a.bin").exists()  # Windows keeps what is open
    # The next cleanup sweeps what was left behind.
    wait_for(lambda: not folder.exists(), "the leftover folder to be swept", timeout=60)
    assert "removed (removed on request)" in agent.log.read_text()
    # Nothing of it confuses the next download of the same package.
    again = agent.wait_complete("LN100020")
    assert Path(again.path, "b.bin").read_bytes() == (site.dp.share / "LN100020" / "b.bin").read_bytes()


def test_repair_of_a_file_held_open_waits_and_loses_nothing(site: Site, agent: AgentProcess) -> None:
    files = {"keep.bin": os.urandom(2 * MIB), "hurt.bin": os.urandom(2 * MIB)}
    site.publish("LN100021", files)
    status = agent.wait_complete("LN100021")
    hurt = Path(status.path, "hurt.bin")
    with open(hurt, "r+b") as handle:  # damage one piece in place
        handle.seek(MIB)
        handle.write(b"\0" * 1000)
    served = site.dp.bytes_sent
    blocker = hold([hurt])  # another process holds the file: no writing to it
    try:
        checked = agent.call("verify", "LN100021")
        assert checked.state != "complete"
        wait_for(lambda: agent.call("status", "LN100021").state == "error", "the repair to stop on the held file", timeout=60)
        assert hurt.read_bytes() != files["hurt.bin"]
    finally:
        blocker.close()
    # Retried every retry_interval; now it can write.
    done = agent.wait_complete("LN100021", timeout=90, errors=True)
    assert Path(done.path, "hurt.bin").read_bytes() == files["hurt.bin"]
    assert Path(done.path, "keep.bin").read_bytes() == files["keep.bin"]
    assert site.dp.bytes_sent - served <= 4 * 64 * 1024  # one damaged piece came again, not the package
    assert agent.call("verify", "LN100021").state == "complete"
