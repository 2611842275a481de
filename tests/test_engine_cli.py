"""`p2pdist get` and `p2pdist seed` as real processes: data, exit codes and one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.torrents import make_torrent, random_bytes, read_tree, write_files
from tests.support.trackers import ANSWER, HANG, REFUSAL, REFUSE, ScriptedTracker, closed_port

FILES = {"setup.msi": random_bytes(600_000, seed=21), "lang/de.mst": random_bytes(50_000, seed=22)}


def _p2pdist(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pdist", *args], capture_output=True, text=True, timeout=timeout)


def _torrent(tmp_path: Path, trackers: tuple[tuple[str, ...], ...] = ()) -> tuple[Path, object]:
    raw, meta = make_torrent(FILES, name="PS100020", piece_length=32 * 1024, trackers=trackers)
    path = tmp_path / "PS100020.torrent"
    path.write_bytes(raw)
    return path, meta


def _start_seed(torrent: Path, folder: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """A `p2pdist seed` process that listens on 127.0.0.1; returns it and its port."""
    port = free_port()
    seeder = subprocess.Popen(
        [sys.executable, "-m", "p2pdist", "seed", str(torrent), str(folder), "--listen", "127.0.0.1", "--port", str(port), "-q", "--duration", "60", *extra],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while True:  # wait until the seed listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return seeder, port
        except OSError:
            assert time.monotonic() < deadline, "seed never listened"
            assert seeder.poll() is None, seeder.stderr.read() if seeder.stderr else ""
            time.sleep(0.1)


def _run_watched(argv: list[str], timeout: float = 60) -> tuple[int, list[tuple[float, str]], float]:
    """Run a p2pdist command; its exit code, stderr lines with arrival times, and exit time."""
    lines: list[tuple[float, str]] = []
    with subprocess.Popen([sys.executable, "-m", "p2pdist", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line.rstrip("\n")) for line in process.stderr or ()))
        reader.start()
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            reader.join(10)
            raise AssertionError(f"p2pdist {argv[0]} still running after {timeout} s; stderr: {[line for _, line in lines]}") from None
        ended = time.monotonic()
        reader.join(10)
    return code, lines, ended


def test_seed_then_get_over_loopback(tmp_path: Path) -> None:
    torrent, meta = _torrent(tmp_path)
    write_files(tmp_path / "seed", meta, FILES)
    seeder, port = _start_seed(torrent, tmp_path / "seed", "--no-tracker")
    try:
        result = _p2pdist("get", str(torrent), "-o", str(tmp_path / "out"), "--peer", f"127.0.0.1:{port}", "--listen", "127.0.0.1", "--no-tracker", "-q", "--timeout", "40")
        assert result.returncode == 0, result.stderr
        assert read_tree(tmp_path / "out", meta) == {f"PS100020/{k}": v for k, v in FILES.items()}
        assert not (tmp_path / "out" / "PS100020.part").exists()
    finally:
        seeder.terminate()
        seeder.communicate(timeout=10)  # reads what is left and closes the pipe


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


@pytest.mark.parametrize("mode", [ANSWER, REFUSE, "unreachable"])
def test_get_with_a_tracker_exits_promptly_once_complete(tmp_path: Path, mode: str) -> None:
    """The tracker answers (and names the seed), refuses, or is down: get ends all the same."""
    seed_torrent, meta = _torrent(tmp_path)
    write_files(tmp_path / "seed", meta, FILES)
    seeder, port = _start_seed(seed_torrent, tmp_path / "seed", "--no-tracker")
    try:
        with ScriptedTracker(mode if mode != "unreachable" else ANSWER, peers=[("127.0.0.1", port)]) as tracker:
            url = tracker.url if mode != "unreachable" else f"http://127.0.0.1:{closed_port()}/announce"
            (tmp_path / "with-tracker").mkdir()
            torrent, _ = _torrent(tmp_path / "with-tracker", trackers=((url,),))
            hint = [] if mode == ANSWER else ["--peer", f"127.0.0.1:{port}"]  # answer: the tracker alone
            code, lines, ended = _run_watched(["get", str(torrent), "-o", str(tmp_path / "out"), "--listen", "127.0.0.1", "--timeout", "50", *hint])
            if mode != "unreachable":
                assert tracker.requests, "get never announced"
    finally:
        seeder.terminate()
        seeder.communicate(timeout=10)  # reads what is left and closes the pipe
    text = [line for _, line in lines]
    assert code == 0, text
    assert read_tree(tmp_path / "out", meta) == {f"PS100020/{k}": v for k, v in FILES.items()}
    completed = [at for at, line in lines if " complete: " in line]
    assert completed, text
    assert ended - completed[0] < 20, f"{ended - completed[0]:.1f} s from completion to exit"  # a hang, not a speed
    assert "Traceback" not in "\n".join(text)
    if mode == REFUSE:
        refusals = [line for line in text if "refused" in line]
        assert len(refusals) == 1 and REFUSAL in refusals[0], text


def test_get_timeout_bounds_the_run_while_the_tracker_hangs(tmp_path: Path) -> None:
    with ScriptedTracker(HANG) as tracker:
        torrent, _ = _torrent(tmp_path, trackers=((tracker.url,),))
        started = time.monotonic()
        code, lines, ended = _run_watched(["get", str(torrent), "-o", str(tmp_path / "out"), "--listen", "127.0.0.1", "-q", "--timeout", "2"])
        assert tracker.requests
    assert code == 1, lines
    assert any("incomplete after 2 s" in line for _, line in lines), lines
    assert ended - started < 40  # 2 s asked for; the ceiling only catches a hang


def test_seed_says_once_that_the_tracker_refuses(tmp_path: Path) -> None:
    with ScriptedTracker(REFUSE) as tracker:
        torrent, meta = _torrent(tmp_path, trackers=((tracker.url,),))
        write_files(tmp_path / "seed", meta, FILES)
        code, lines, _ = _run_watched(["seed", str(torrent), str(tmp_path / "seed"), "--listen", "127.0.0.1", "-q", "--duration", "2"])
    assert code == 0, lines
    text = [line for _, line in lines]
    assert len(text) == 1 and "refused" in text[0] and REFUSAL in text[0], text
