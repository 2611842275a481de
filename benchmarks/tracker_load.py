"""Announces per second of the p2pdist site server against opentracker, interleaved.

Both trackers hold the same 100k peers across 10k torrents (10 per torrent, 3 of them seeds),
registered through their HTTP announce. After a 2 s warm-up each, wrk (one thread, a Lua script
choosing a random registered peer per request, seeded) re-announces for a fixed time.

Like with like: opentracker has no HTTP keep-alive (it closes the connection after every reply,
without saying so, which wrk counts as a read error and reconnects), so the comparison and its
ratio use one new connection per request for both trackers ("Connection: close"). Those runs
alternate A B / B A so the machine's drift hits both, and the ratio is taken per pair. p2pdist
is also measured with keep-alive, which opentracker cannot do, so that figure stands alone.

Each tracker is one process pinned to CPU 1, wrk to CPU 0. p2pdist runs as ``p2pdist server``
does (uvloop, the in-memory store) with rate limits off; opentracker runs in whitelist mode
(-w) with the same 10k info-hashes, so both refuse unknown torrents.

Memory per registered peer = (RSS after registering - RSS before) / peers.

    .venv/bin/python benchmarks/tracker_load.py [--rounds 3] [--seconds 5] [--connections 32]

Prints one line and writes benchmarks/results/tracker_load.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote_from_bytes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pdist import bencode
from p2pdist.config import toml_value
from p2pdist.metainfo import PackageIdentity, encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import generate_key, raw_public_key, sign_torrent
from p2pdist.tracker.announce import parse_scrape_response
from p2pdist.tracker.repository import Repository
from _net import free_port

SERVER_CPU, CLIENT_CPU = 1, 0
NEW_CONNECTION, KEEP_ALIVE = "new connection per request", "keep-alive"
COMPARISON_NOTE = (
    "ratio = p2pdist / opentracker with one new connection per request for both; opentracker has no "
    "keep-alive (it closes after every reply, which wrk counts as read errors), so p2pdist's keep-alive "
    "figure has no counterpart"
)
PER_TORRENT, SEEDS_PER_TORRENT = 10, 3
ANNOUNCE_URL = "http://127.0.0.1/announce"  # what the torrents name; published straight into the repository
MAX_SECONDS = 900  # hard bound on the whole run

LUA = r"""
local hashes = {}
for line in io.lines("%(hashes)s") do hashes[#hashes + 1] = line end
local total, per, seeds = %(total)d, %(per)d, %(seeds)d
local mode, counter = "%(mode)s", %(start)d
local headers = {}
if %(close)s then headers["Connection"] = "close" end
math.randomseed(%(seed)d)

function request()
  local k
  if mode == "register" then
    k = counter %% total
    counter = counter + 1
  else
    k = math.random(0, total - 1)
  end
  local t = math.floor(k / per) + 1
  local j = k %% per
  local left = (j < seeds) and "0" or "4096"
  local path = "/announce?info_hash=" .. hashes[t] .. "&peer_id=-BM0001-" .. string.format("%%012d", k)
    .. "&port=" .. (20000 + j) .. "&uploaded=0&downloaded=0&left=" .. left .. "&compact=1&numwant=50"
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"errors": %%d, "status_errors": %%d}\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url, timeout=2).read()
            return
        time.sleep(0.1)
    raise SystemExit(f"tracker at {url} did not come up")


def make_torrents(count: int, key, rng: random.Random) -> list[bytes]:
    torrents = []
    for i in range(count):
        info = {
            b"length": 16384,
            b"name": f"pkg{i}.bin".encode(),
            b"p2pdist": PackageIdentity(f"BMK{i:05X}", 1).to_bencode(),
            b"piece length": 16384,
            b"pieces": rng.randbytes(20),
            b"private": 1,
        }
        unsigned = encode_torrent(bencode.encode(info), trackers=((ANNOUNCE_URL,),))
        torrents.append(sign_torrent(parse_metainfo(unsigned), key))
    return torrents


class Tracker:
    def __init__(self, name: str, argv: list[str], port: int, cwd: Path) -> None:
        self.name, self.port = name, port
        self.process = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        with contextlib.suppress(OSError):
            os.sched_setaffinity(self.process.pid, {SERVER_CPU})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_p2pdist(work: Path, hashes_hex: list[str], torrents: list[bytes], public_hex: str) -> Tracker:
    data = work / "p2pdist-data"
    repository = Repository(data, (bytes.fromhex(public_hex),))
    for torrent in torrents:
        repository.publish(torrent, time.time(), announce_url=ANNOUNCE_URL)
    repository.close()
    port = free_port()
    config = work / "site.toml"
    config.write_text(
        f"data_dir = {toml_value(data)}\npublic_keys = [{toml_value(public_hex)}]\n"
        f'[listen]\nhost = "127.0.0.1"\nport = {port}\n'
        "[tracker]\ninterval = 1800\nmin_interval = 900\npeer_expiry = 3600\nnumwant_default = 50\n"
        "[limits]\nannounce_rate = 0.0\npeers_per_address = 0\n"
        '[[sites]]\nname = "bench"\nsubnets = ["127.0.0.0/8"]\n'
    )
    tracker = Tracker("p2pdist", [sys.executable, "-m", "p2pdist.tracker", "--config", str(config)], port, work)
    wait_http(tracker.url + "/api/packages")
    return tracker


def start_opentracker(work: Path, hashes_hex: list[str]) -> Tracker | None:
    binary = shutil.which("opentracker")
    if binary is None:
        return None
    jail = work / "opentracker"
    jail.mkdir()
    (jail / "whitelist").write_text("\n".join(hashes_hex) + "\n")
    port = free_port()
    argv = [binary, "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-w", "whitelist", "-d", str(jail)]
    tracker = Tracker("opentracker", argv, port, jail)
    wait_http(tracker.url + "/announce?info_hash=" + "%00" * 20 + "&peer_id=" + "x" * 20 + "&port=1&left=0")
    return tracker


def run_wrk(tracker: Tracker, work: Path, mode: str, close: bool, seconds: int, connections: int,
            seed: int, total: int, start: int = 0) -> dict[str, float]:  # fmt: skip
    script = work / f"{mode}-{tracker.name}.lua"
    script.write_text(LUA % {"hashes": work / "hashes.txt", "total": total, "per": PER_TORRENT,
                             "seeds": SEEDS_PER_TORRENT, "mode": mode, "start": start,
                             "close": "true" if close else "false", "seed": seed})  # fmt: skip
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script), tracker.url]
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {CLIENT_CPU})
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk gave no result for {tracker.name}: {out[-500:]}")
    result = json.loads(line[len("RESULT "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def register(tracker: Tracker, work: Path, total: int, connections: int) -> float:
    """Announce every (torrent, peer) once through wrk; returns seconds taken."""
    began, start = time.monotonic(), 0
    while start < total and time.monotonic() - began < 300:
        result = run_wrk(tracker, work, "register", False, 3, connections, 0, total, start)
        start += max(int(result["requests"]) - connections, 1)
    return time.monotonic() - began


def sample_counts(tracker: Tracker, hashes: list[bytes], rng: random.Random) -> list[int]:
    """Peers per torrent as the tracker's scrape reports them, for 20 random torrents."""
    counts = []
    for info_hash in rng.sample(hashes, 20):
        url = f"{tracker.url}/scrape?info_hash={quote_from_bytes(info_hash, safe='')}"
        stats = parse_scrape_response(urllib.request.urlopen(url, timeout=5).read()).files.get(info_hash)
        counts.append(stats.complete + stats.incomplete if stats else 0)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torrents", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("tracker_load: wrk is not installed (scripts/system-deps)", file=sys.stderr)
        return 1
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    rng = random.Random(args.seed)
    total = args.torrents * PER_TORRENT
    began = time.monotonic()
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="tracker-load-", dir=shm) as temp:
        work = Path(temp)
        os.chmod(work, 0o755)  # opentracker drops to "nobody" and must read its whitelist
        key = generate_key()
        public_hex = raw_public_key(key.public_key()).hex()
        torrents = make_torrents(args.torrents, key, rng)
        hashes = [parse_metainfo(t).info_hash for t in torrents]
        (work / "hashes.txt").write_text("\n".join(quote_from_bytes(h, safe="") for h in hashes) + "\n")
        trackers = [start_p2pdist(work, [h.hex() for h in hashes], torrents, public_hex)]
        other = start_opentracker(work, [h.hex() for h in hashes])
        if other is None:
            print("tracker_load: opentracker not installed; measuring p2pdist alone", file=sys.stderr)
        else:
            trackers.append(other)
        try:
            memory, registered = {}, {}
            for tracker in trackers:
                before = rss_kib(tracker.process.pid)
                seconds = register(tracker, work, total, args.connections)
                after = rss_kib(tracker.process.pid)
                counts = sample_counts(tracker, hashes, random.Random(args.seed))
                registered[tracker.name] = {"seconds": round(seconds, 1), "sampled_peers_per_torrent": counts}
                memory[tracker.name] = round((after - before) * 1024 / total, 1)
            for tracker in trackers:  # warm-up, not recorded: caches filled, pages touched
                run_wrk(tracker, work, "load", False, 2, args.connections, args.seed - 1, total)
            runs: dict[str, dict[str, list[dict[str, float]]]] = {NEW_CONNECTION: {}, KEEP_ALIVE: {}}
            for round_no in range(args.rounds):
                order = trackers if round_no % 2 == 0 else trackers[::-1]
                plan = [(NEW_CONNECTION, t) for t in order] + [(KEEP_ALIVE, trackers[0])]
                for mode, tracker in plan:
                    if time.monotonic() - began > MAX_SECONDS:
                        break
                    result = run_wrk(tracker, work, "load", mode == NEW_CONNECTION, args.seconds, args.connections,
                                     args.seed + round_no, total)  # fmt: skip
                    runs[mode].setdefault(tracker.name, []).append(result)
        finally:
            for tracker in trackers:
                tracker.stop()
    summary: dict[str, object] = {"peers": total, "torrents": args.torrents, "connections": args.connections,
                                  "seconds_per_run": args.seconds, "rounds": args.rounds,
                                  "bytes_per_peer": memory, "registration": registered, "modes": {},
                                  "note": COMPARISON_NOTE}  # fmt: skip
    line = [f"tracker_load: {total} peers/{args.torrents} torrents"]
    for mode, by_tracker in runs.items():
        ours = by_tracker.get("p2pdist", [])
        if not ours:
            continue
        entry: dict[str, object] = {
            name: {
                "rps": [round(r["rps"]) for r in results],
                "p50_ms": [round(r["p50_us"] / 1000, 2) for r in results],
                "p99_ms": [round(r["p99_us"] / 1000, 2) for r in results],
                "errors": sum(int(r["errors"] + r["status_errors"]) for r in results),
            }
            for name, results in by_tracker.items()
        }
        theirs = by_tracker.get("opentracker", [])
        ratios = [a["rps"] / b["rps"] for a, b in zip(ours, theirs)]
        p50 = statistics.median(r["p50_us"] for r in ours) / 1000
        p99 = max(r["p99_us"] for r in ours) / 1000
        text = f"{mode}: p2pdist {statistics.median(r['rps'] for r in ours):.0f}/s p50 {p50:.1f}ms p99<={p99:.1f}ms"
        if ratios:
            entry["ratio_per_pair"] = [round(r, 3) for r in ratios]
            entry["ratio_median"] = round(statistics.median(ratios), 3)
            text += (f", opentracker {statistics.median(r['rps'] for r in theirs):.0f}/s, ratio "
                     f"{statistics.median(ratios):.2f} (pairs {' '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
        elif mode == KEEP_ALIVE:
            text += " (opentracker has no keep-alive: no ratio)"
        summary["modes"][mode] = entry  # type: ignore[index]
        line.append(text)
    line.append("bytes/peer " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
    print("; ".join(line))
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "tracker_load.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
