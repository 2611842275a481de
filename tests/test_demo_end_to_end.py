"""The README's main command, end to end: every part as a real process on 127.0.0.0/8."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_installs_on_every_pc_with_one_wan_copy() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "p2pdist", "demo", "--size-mib", "6", "--agents", "3", "--retry-interval", "1", "--timeout", "120"],
        capture_output=True, text=True, timeout=200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert len(re.findall(r"^\[pc\d\] success after", out, re.M)) == 3, out
    rows = re.findall(r"^pc(\d)\s+127\.0\.1\.\d\s+[\d.]+ s\s+\d+\s+0\s+([\d.]+) MiB\s+([\d.]+) MiB\s+(\S+)", out, re.M)
    assert len(rows) == 3, out
    for number, peers, dp, installed_from in rows:
        assert float(peers) + float(dp) >= 6.0 - 0.05  # every byte came from somewhere
        assert installed_from.endswith("/PS100001"), installed_from
    # The product's claim: one copy crosses the branch's WAN (plain SMS would pull one per PC).
    # The first copy must come from the distribution point; 5% more is what the web-seed claims
    # and end-game duplicates may cost.
    copies = float(re.search(r"\(([\d.]+) copies over the WAN", out).group(1))
    assert 1.0 <= copies <= 1.05, out
    assert "[demo] everything stopped" in out
