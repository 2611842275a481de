"""How long `p2pdist get` runs on after its download is complete, for each kind of tracker.

One `p2pdist seed` on 127.0.0.1 (no tracker) serves a seeded 8 MiB package; each round runs
`p2pdist get` of the same package with a torrent naming a tracker that answers and names the
seed (opentracker in whitelist mode when installed, else a scripted tracker), one that refuses,
and one that is down (the last two get the seed as ``--peer``). The figure is the time from
get's "complete" line on stderr to its exit: the goodbye announce and the shutdown.

    .venv/bin/python benchmarks/get_exit.py [--rounds 5] [--size-mib 8]

Prints one line per run on stderr, one result line on stdout, and writes
benchmarks/results/get_exit.json.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from p2pdist import bencode
from p2pdist.metainfo import encode_torrent, parse_metainfo
from _net import free_port, wait_listening

PIECE = 256 * 1024
RESULTS = Path(__file__).parent / "results"


def scripted_tracker(body: bytes) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A tracker on 127.0.0.1 that answers every announce with ``body``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/announce"


def start_opentracker(root: Path, info_hash: bytes) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("opentracker")
    if binary is None:
        return None
    (root / "whitelist").write_text(info_hash.hex() + "\n")
    os.chmod(root, 0o755)
    port = free_port()
    argv = [binary, "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", str(root), "-w", "/whitelist"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)
    return process, f"http://127.0.0.1:{port}/announce"


def run_get(torrent: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(seconds from start to 'complete', seconds from 'complete' to exit) of one get."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pdist", "get", str(torrent), "-o", str(out), "--listen", "127.0.0.1", "--timeout", "120", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    completed = None
    assert process.stderr is not None
    for line in process.stderr:
        if " complete: " in line:
            completed = time.monotonic()
    code = process.wait(150)
    ended = time.monotonic()
    if code != 0 or completed is None:
        raise SystemExit(f"get exited {code} without completing")
    return completed - started, ended - completed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="p2pdist-get-exit-"))
    processes: list[subprocess.Popen[bytes]] = []
    servers: list[http.server.ThreadingHTTPServer] = []
    try:
        payload = random.Random(7).randbytes(args.size_mib * 1024 * 1024)
        pieces = b"".join(hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, len(payload), PIECE))
        raw_info = bencode.encode({b"length": len(payload), b"name": b"PS100099.bin", b"piece length": PIECE, b"pieces": pieces, b"private": 1})
        info_hash = parse_metainfo(encode_torrent(raw_info)).info_hash
        (work / "seed").mkdir()
        (work / "seed" / "PS100099.bin").write_bytes(payload)
        (work / "plain.torrent").write_bytes(encode_torrent(raw_info))
        seed_port = free_port()
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "p2pdist", "seed", str(work / "plain.torrent"), str(work / "seed"), "--listen", "127.0.0.1", "--port", str(seed_port), "--no-tracker", "-q"],
            stderr=subprocess.DEVNULL,
        ))
        wait_listening(seed_port)
        peer = ["--peer", f"127.0.0.1:{seed_port}"]

        answering = start_opentracker(work, info_hash)
        if answering is not None:
            processes.append(answering[0])
            answer_url, answer_kind, answer_extra = answering[1], "opentracker", peer  # the seed does not announce
        else:
            compact = socket.inet_aton("127.0.0.1") + seed_port.to_bytes(2, "big")
            server, answer_url = scripted_tracker(bencode.encode({b"interval": 1800, b"peers": compact}))
            servers.append(server)
            answer_kind, answer_extra = "scripted", []
        server, refuse_url = scripted_tracker(bencode.encode({b"failure reason": b"not registered"}))
        servers.append(server)
        modes = {
            f"answers ({answer_kind})": (answer_url, answer_extra),
            "refuses": (refuse_url, peer),
            "down": (f"http://127.0.0.1:{free_port()}/announce", peer),
        }
        results: dict[str, list[float]] = {mode: [] for mode in modes}
        downloads: list[float] = []
        for round_ in range(args.rounds):
            for mode, (url, extra) in modes.items():
                torrent = work / f"{abs(hash(mode))}.torrent"
                torrent.write_bytes(encode_torrent(raw_info, trackers=((url,),)))
                download, exit_after = run_get(torrent, work / "out", extra)
                results[mode].append(exit_after)
                downloads.append(download)
                print(f"round {round_ + 1} tracker {mode}: complete after {download:.2f} s, exit {exit_after * 1000:.0f} ms later", file=sys.stderr)
        summary = {mode: {"median_ms": statistics.median(v) * 1000, "max_ms": max(v) * 1000} for mode, v in results.items()}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "get_exit.json").write_text(json.dumps({"rounds": args.rounds, "size_mib": args.size_mib, "exit_after_s": results, "download_s": downloads, "summary": summary}, indent=2))
        print("get exit after completion: " + "; ".join(f"tracker {m} median {s['median_ms']:.0f} ms, max {s['max_ms']:.0f} ms" for m, s in summary.items()))
        return 0
    finally:
        for server in servers:
            server.shutdown()
        for process in processes:
            process.terminate()
            process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
