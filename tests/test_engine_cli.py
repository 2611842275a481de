"""`p2pdist get` and `p2pdist seed` as real processes: data, exit codes and one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.torrents import make_torrent, random_bytes, read_tree, write_files

FILES = {"setup.msi": random_bytes(600_000, seed=21), "lang/de.mst": random_bytes(50_000, seed=22)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _p2pdist(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pdist", *args], capture_output=True, text=True, timeout=timeout)


def _torrent(tmp_path: Path) -> tuple[Path, object]:
    raw, meta = make_torrent(FILES, name="PS100020", piece_length=32 * 1024)
    path = tmp_path / "PS100020.torrent"
    path.write_bytes(raw)
    return path, meta


def test_seed_then_get_over_loopback(tmp_path: Path) -> None:
    torrent, meta = _torrent(tmp_path)
    write_files(tmp_path / "seed", meta, FILES)
    port = _free_port()
    seeder = subprocess.Popen(
        [sys.executable, "-m", "p2pdist", "seed", str(torrent), str(tmp_path / "seed"), "--listen", "127.0.0.1", "--port", str(port), "--no-tracker", "-q", "--duration", "60"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # wait until the seed listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "seed never listened"
                assert seeder.poll() is None, seeder.stderr.read() if seeder.stderr else ""
                time.sleep(0.1)
        result = _p2pdist("get", str(torrent), "-o", str(tmp_path / "out"), "--peer", f"127.0.0.1:{port}", "--listen", "127.0.0.1", "--no-tracker", "-q", "--timeout", "40")
        assert result.returncode == 0, result.stderr
        assert read_tree(tmp_path / "out", meta) == {f"PS100020/{k}": v for k, v in FILES.items()}
        assert not (tmp_path / "out" / "PS100020.part").exists()
    finally:
        seeder.terminate()
        seeder.wait(10)


def test_get_bad_torrent_is_one_line_exit_5(tmp_path: Path) -> None:
    bad = tmp_path / "bad.torrent"
    bad.write_bytes(b"d4:infoi1ee")
    result = _p2pdist("get", str(bad), "-o", str(tmp_path / "out"))
    assert result.returncode == 5
    assert result.stderr.count("\n") == 1 and "bad torrent" in result.stderr
    assert "Traceback" not in result.stderr


def test_get_into_unwritable_place_exit_4(tmp_path: Path) -> None:
    torrent, _ = _torrent(tmp_path)
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    result = _p2pdist("get", str(torrent), "-o", str(blocker / "sub"))
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr


def test_seed_without_data_exit_3(tmp_path: Path) -> None:
    torrent, _ = _torrent(tmp_path)
    (tmp_path / "empty").mkdir()
    result = _p2pdist("seed", str(torrent), str(tmp_path / "empty"), "--listen", "127.0.0.1", "-q")
    assert result.returncode == 3, result.stderr
    assert "does not match the torrent" in result.stderr


def test_get_without_peers_times_out_exit_1(tmp_path: Path) -> None:
    torrent, _ = _torrent(tmp_path)
    result = _p2pdist("get", str(torrent), "-o", str(tmp_path / "out"), "--listen", "127.0.0.1", "--no-tracker", "-q", "--timeout", "1")
    assert result.returncode == 1
    assert "incomplete after 1 s" in result.stderr
