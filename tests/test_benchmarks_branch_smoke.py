"""The branch-office benchmark, small: real namespaces, agents, libtorrent, HTTP; under a minute.

Skipped (with the reason) when this machine cannot create network namespaces or we are not
root. The pure parts (address plan, fluid bound, summaries) are checked everywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.branch import report  # noqa: E402
from benchmarks.branch.bound import fluid_bound, http_bound  # noqa: E402
from benchmarks.branch.netns import available, leftovers  # noqa: E402
from benchmarks.branch.topology import Params, plan  # noqa: E402


def test_plan_addresses_stay_in_the_benchmarking_range() -> None:
    topo = plan(Params(branches=3, clients=4))
    import ipaddress

    net = ipaddress.ip_network("198.18.0.0/15")
    addresses = [c.address for c in topo.clients] + [b.gateway for b in topo.branches] + [b.wan_core for b in topo.branches]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a) in net for a in addresses)
    assert len(set(topo.namespaces)) == 2 + 3 + 12
    assert all(name.startswith("p2pb-") for name in topo.namespaces)
    # every link shaped in both directions: 2 per WAN, 2 per client, 2 for the HQ uplink
    assert len(topo.shapes) == 2 * 3 + 2 * 12 + 2


def test_fluid_bound_terms() -> None:
    params = Params(branches=2, clients=8, wan_mbit=20, lan_mbit=100, hq_mbit=1000, size_mib=50)
    bound = fluid_bound(params)
    f = 50 * 2**20 * 8
    assert bound.term == "F/W"
    assert bound.seconds == pytest.approx(f / 20e6)
    assert bound.terms["N*F/(W+N*u)"] == pytest.approx(8 * f / (20e6 + 8 * 100e6))
    # a thin HQ uplink shared by the branches becomes the bottleneck
    thin = fluid_bound(Params(branches=4, clients=8, wan_mbit=20, hq_mbit=40, size_mib=50))
    assert thin.term == "B*F/H" and thin.seconds == pytest.approx(4 * f / 40e6)
    assert http_bound(params) == pytest.approx(8 * f / 20e6)


def test_summary_and_goals_from_a_raw_result() -> None:
    size = 1000
    raw = {
        "clients": [
            {"client": "b1c1", "verified_s": 2.0, "installed_s": 4.0, "from_peers": 0, "from_webseed": 1000},
            {"client": "b1c2", "verified_s": 3.0, "installed_s": 6.0, "from_peers": 1000, "from_webseed": 0},
        ],
        "wan": {"branches": {"branch-1": {"down": 1040, "up": 30}}, "hq_out": 1050, "hq_in": 30},
        "dp_bytes_total": 1000,
    }
    summary = report.summarize(raw, size, bound_s=2.5)
    assert summary["all_verified_s"] == 3.0 and summary["all_installed_s"] == 6.0
    assert summary["max_wan_down_copies"] == pytest.approx(1.04)
    assert summary["verified_over_bound"] == pytest.approx(1.2)
    assert summary["sms_lag_max_s"] == pytest.approx(3.0)
    worse = dict(summary, max_wan_down_copies=2.0, all_verified_s=5.0)
    verdict = report.goals({"p2pdist": summary, "libtorrent": worse})
    assert verdict["wan_copies_le_1.05"] and verdict["time_le_1.25_bound"]
    assert verdict["better_than_libtorrent"] == {"wan": True, "time": True}


def _skip_reason() -> str | None:
    reason = available()
    if reason:
        print(f"branch smoke skipped: {reason}")
    return reason


@pytest.mark.timeout(90)
def test_smoke_run(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "branch" / "run.py"), "--smoke", "--prefix", "p2pbt", "--json", str(out)],
        capture_output=True, text=True, timeout=85, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not leftovers("p2pbt"), "namespaces left behind"
    result = json.loads(out.read_text())
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
    size = result["params"]["size_bytes"]
    summary = result["summary"]
    assert set(summary) == {"p2pdist", "http", "libtorrent"}
    for name, figures in summary.items():
        assert figures["verified"] == figures["clients"] == 4, name
        # every branch received at least one copy over its WAN link, and nothing absurd
        for branch, wan in figures["wan"].items():
            assert 0.95 <= wan["down_copies"] <= 4.0, (name, branch, wan)
    # HTTP only: each of the 2 clients of a branch pulls the whole package over the WAN
    assert all(w["down_copies"] >= 1.9 for w in summary["http"]["wan"].values())
    assert summary["http"]["dp_copies"] == pytest.approx(4.0, rel=0.01)
    ours = summary["p2pdist"]
    assert ours["installed"] == 4 and ours["all_installed_s"] >= ours["all_verified_s"] > 0
    assert ours["from_peers_bytes"] + ours["from_webseed_bytes"] >= 4 * size
    assert result["bound"]["seconds"] > 0 and result["bound"]["binding_term"]
    for run in result["runs"]:  # every round keeps each PC's times
        assert len(run["clients"]) == 4 and all(c["verified_s"] for c in run["clients"]), run["approach"]
