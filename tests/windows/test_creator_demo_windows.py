"""The creator on Windows paths, and the README's demo end to end on Windows CPython."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import lane
from lane import p2pdist_here
from p2pdist.metainfo import parse_metainfo


def test_create_on_a_windows_path_keeps_folders_as_path_lists(tmp_path: Path) -> None:
    package = tmp_path / "Share Point" / "PS100077"
    (package / "Sub Dir" / "deeper").mkdir(parents=True)
    (package / "setup.exe").write_bytes(b"MZ" + bytes(5000))
    (package / "Sub Dir" / "deeper" / "a b.cab").write_bytes(bytes(70000))
    assert str(package)[1:3] == ":\\"  # a drive-letter path with backslashes
    torrent = tmp_path / "out" / "PS100077.torrent"
    torrent.parent.mkdir()
    p2pdist_here("create", str(package), "-o", str(torrent), "--pkg", "PS100077", "-t", "http://127.0.0.1:1/announce")
    info = parse_metainfo(torrent.read_bytes()).info
    paths = sorted(tuple(entry.path) for entry in info.files if not entry.pad)
    assert paths == [("PS100077", "Sub Dir", "deeper", "a b.cab"), ("PS100077", "setup.exe")]
    shown = json.loads(p2pdist_here("show", str(torrent), "--json"))
    assert shown["info"]["name"] == "PS100077" if "info" in shown else shown["name"] == "PS100077"


def test_create_from_a_dp_share_on_windows(tmp_path: Path) -> None:
    share = tmp_path / "SMSPKGC$"
    for package_id in ("PS100078", "PS100079"):
        (share / package_id).mkdir(parents=True)
        (share / package_id / "install.cmd").write_bytes(b"@exit /b 0\r\n")
    out = tmp_path / "torrents"
    out.mkdir()
    p2pdist_here("create", "--dp", str(share), "-O", str(out), "-t", "http://127.0.0.1:1/announce")
    assert sorted(path.name for path in out.glob("*.torrent")) == ["PS100078.torrent", "PS100079.torrent"]


def test_demo_installs_on_every_pc_with_one_wan_copy() -> None:
    result = lane.run(
        [sys.executable, "-m", "p2pdist", "demo", "--size-mib", "6", "--retry-interval", "1", "--timeout", "150"],
        text=True, timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert len(re.findall(r"^\[pc\d\] success after", out, re.M)) == 3, out
    rows = re.findall(r"^pc\d\s+127\.0\.1\.\d\s+[\d.]+ s\s+\d+\s+0\s+[\d.]+ MiB\s+[\d.]+ MiB\s+(\S.*)$", out, re.M)
    assert len(rows) == 3 and all(row.strip().endswith("\\PS100001") for row in rows), out
    copies = float(re.search(r"\(([\d.]+) copies over the WAN", out).group(1))  # type: ignore[union-attr]
    print(f"demo on Windows CPython: {copies:.2f} WAN copies")
    assert copies < 2.0, out  # plain SMS would pull one copy per PC: 3
    assert "[demo] everything stopped" in out
