"""Branch-office swarm benchmark: one package to every PC of several branches over slow WAN links.

Builds an emulated enterprise network in network namespaces (needs root), runs each approach
(p2pdist agents + wrapper under the SMS simulator; HTTP-only from the DP; a libtorrent swarm)
on it, and reports per-client times, WAN bytes per branch / package size, bytes from peers vs
the web seed, and the fluid lower bound. docs/benchmark-branch.md has the details.

    sudo .venv/bin/python benchmarks/branch/run.py                 # defaults: 2 x 8 clients, 50 MiB, WAN 20 Mbit/s
    sudo .venv/bin/python benchmarks/branch/run.py --smoke         # 2 x 2 clients, 4 MiB, under a minute
    sudo .venv/bin/python benchmarks/branch/run.py --cleanup       # remove what a killed run left behind

Writes benchmarks/results/branch.json and branch.png (``--smoke``: branch-smoke.*) and prints
one line. Exit status: 0 measured (goals are reported, not enforced), 1 an approach failed,
2 cannot run here (not root, no namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import glob
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.branch import report as reporting  # noqa: E402
from benchmarks.branch.approaches import APPROACHES  # noqa: E402
from benchmarks.branch.bound import fluid_bound, http_bound  # noqa: E402
from benchmarks.branch.harness import Harness, Options, Tunables  # noqa: E402
from benchmarks.branch.netns import Network, available, cleanup  # noqa: E402
from benchmarks.branch.topology import Params, plan  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
SMOKE = {
    "branches": 2, "clients": 2, "size_mib": 4.0, "approaches": "p2pdist,http,libtorrent", "deadline": 55.0,
    "stagger": 0.5, "retry_interval": 2.0,
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--branches", type=int, default=2)
    p.add_argument("--clients", type=int, default=8, help="clients per branch")
    p.add_argument("--wan-mbit", type=float, default=20.0, help="WAN link rate, each direction")
    p.add_argument("--lan-mbit", type=float, default=100.0, help="client link rate, each direction")
    p.add_argument("--hq-mbit", type=float, default=1000.0, help="HQ uplink, shared by all branches (0: unshaped)")
    p.add_argument("--size-mib", type=float, default=50.0, help="package size")
    p.add_argument("--seed", type=int, default=1, help="package bytes and client start offsets")
    p.add_argument("--approaches", default="p2pdist,http,libtorrent", help="comma list of: " + ", ".join(APPROACHES))
    p.add_argument("--rounds", type=int, default=1, help="repeat the approaches, interleaved (ratios per round)")
    p.add_argument("--retry-interval", type=float, default=5.0, help="SMS simulator retry interval (s)")
    p.add_argument("--stagger", type=float, default=1.0, help="client starts spread over this many seconds")
    p.add_argument("--piece-size", default="", help="torrent piece size (default: the creator's choice)")
    p.add_argument("--timeout", type=float, default=0.0, help="per approach (default: from the bound)")
    p.add_argument("--deadline", type=float, default=600.0, help="whole run, seconds")
    g = p.add_argument_group("settings written into agent.toml / site.toml")
    g.add_argument("--grace", type=float, default=Tunables.web_seed_grace, help="agent web_seed_grace")
    g.add_argument("--choke-interval", type=float, default=Tunables.choke_interval)
    g.add_argument("--upload-slots", type=int, default=Tunables.upload_slots)
    g.add_argument("--numwant-max", type=int, default=0, help="site server tracker.numwant_max (0: its default)")
    g.add_argument("--tracker-interval", type=int, default=Tunables.tracker_interval)
    g.add_argument("--site-layout", choices=("locations", "sites"), default=Tunables.site_layout,
                   help="one site with a location per branch (default), or a site per branch")
    p.add_argument("--p2pdist-path", type=Path, default=None, help="folder holding a p2pdist package to run instead (A/B a patch)")
    p.add_argument("--smoke", action="store_true", help="2 x 2 clients, 4 MiB, all approaches, under a minute")
    p.add_argument("--cleanup", action="store_true", help="remove leftover namespaces, processes and work folders, then exit")
    p.add_argument("--prefix", default="p2pb", help="namespace name prefix (1-6 letters/digits)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs) and print its path")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--png", type=Path, default=None)
    return p


def _work_root() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


def _remove_work_dirs(prefix: str) -> list[str]:
    found = glob.glob(os.path.join(_work_root() or tempfile.gettempdir(), f"{prefix}-branch-*"))
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found


async def run_all(harness: Harness, names: list[str], rounds: int, bound_s: float, http_s: float) -> list[dict[str, Any]]:
    await asyncio.to_thread(harness.prepare)
    runs = []
    for number in range(1, rounds + 1):
        for name in names:
            started = time.monotonic()
            print(f"[branch] round {number}: {name} ...", file=sys.stderr, flush=True)
            # Each round starts from empty agent homes and caches (the summary already holds the
            # previous round's figures); logs live elsewhere and are kept.
            shutil.rmtree(harness.work / name, ignore_errors=True)
            try:
                raw = await APPROACHES[name](harness, http_s if name == "http" else bound_s)
                error = None
            except Exception as exc:  # one approach failing must not lose the others' figures
                raw, error = None, f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                await harness.procs.stop_all()
            runs.append({"round": number, "approach": name, "raw": raw, "error": error, "wall_s": round(time.monotonic() - started, 1)})
            print(f"[branch] round {number}: {name} done in {time.monotonic() - started:.0f} s{' (' + error + ')' if error else ''}", file=sys.stderr, flush=True)
    return runs


def _client_times(raw: dict[str, Any] | None) -> list[dict[str, Any]]:
    keys = ("client", "start_s", "verified_s", "installed_s", "from_peers", "from_webseed", "cpu_s")
    return [{k: c.get(k) for k in keys} for c in (raw or {}).get("clients", [])]


def build_report(params: Params, options: Options, runs: list[dict[str, Any]]) -> dict[str, Any]:
    bound = fluid_bound(params)
    size = params.size_bytes
    for run in runs:
        run["summary"] = reporting.summarize(run["raw"], size, bound.seconds) if run["raw"] else None
    summary: dict[str, Any] = {}
    approaches: dict[str, Any] = {}
    for name in dict.fromkeys(run["approach"] for run in runs):
        good = [run for run in runs if run["approach"] == name and run["summary"]]
        if not good:
            continue
        times = [run["summary"]["all_verified_s"] or float("inf") for run in good]
        middle = good[times.index(sorted(times)[(len(times) - 1) // 2])]
        summary[name], approaches[name] = middle["summary"], middle["raw"]
    pairs = []
    for number in sorted({run["round"] for run in runs}):
        by = {run["approach"]: run["summary"] for run in runs if run["round"] == number and run["summary"]}
        if "p2pdist" in by and "libtorrent" in by and by["p2pdist"]["all_verified_s"] and by["libtorrent"]["all_verified_s"]:
            pairs.append({
                "round": number,
                "time_ratio": round(by["p2pdist"]["all_verified_s"] / by["libtorrent"]["all_verified_s"], 3),
                "wan_ratio": round(by["p2pdist"]["max_wan_down_copies"] / max(by["libtorrent"]["max_wan_down_copies"], 1e-9), 3),
            })  # fmt: skip
    return {
        "params": params.__dict__ | {"size_bytes": size},
        "options": {k: v for k, v in options.__dict__.items() if k != "tunables"} | {"tunables": options.tunables.__dict__},
        "bound": bound.to_json(),
        "http_bound_s": http_bound(params),
        "summary": summary,
        "goals": reporting.goals(summary),
        "pairs_p2pdist_over_libtorrent": pairs,
        "median_pair_time_ratio": statistics.median(p["time_ratio"] for p in pairs) if pairs else None,
        "approaches": approaches,
        # Every round, with each PC's times, so an outlier round can be read afterwards.
        "runs": [{k: v for k, v in run.items() if k != "raw"} | {"clients": _client_times(run["raw"])} for run in runs],
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cleanup:
        removed = cleanup(args.prefix)
        dirs = _remove_work_dirs(args.prefix)
        print(f"branch: removed {len(removed)} namespaces ({', '.join(removed) or 'none'}) and {len(dirs)} work folders")
        return 0
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) == parser().get_default(key):
                setattr(args, key, value)
    reason = available()
    if reason:
        print(f"branch: cannot run here: {reason}")
        return 2
    try:
        params = Params(args.branches, args.clients, args.wan_mbit, args.lan_mbit, args.hq_mbit, args.size_mib, args.seed, args.prefix)
    except ValueError as exc:
        print(f"branch: error: {exc}", file=sys.stderr)
        return 2
    names = [name.strip() for name in args.approaches.split(",") if name.strip()]
    unknown = [name for name in names if name not in APPROACHES]
    if unknown or not names:
        print(f"branch: error: unknown approach {', '.join(unknown) or '(none)'}; choose from {', '.join(APPROACHES)}", file=sys.stderr)
        return 2
    tunables = Tunables(
        web_seed_grace=args.grace, choke_interval=args.choke_interval, upload_slots=args.upload_slots,
        tracker_interval=args.tracker_interval, numwant_max=args.numwant_max, site_layout=args.site_layout,
    )
    options = Options(
        args.retry_interval, args.stagger, args.timeout, args.piece_size, p2pdist_path=args.p2pdist_path, tunables=tunables
    )
    stem = "branch-smoke" if args.smoke else "branch"
    json_path = args.json or RESULTS / f"{stem}.json"
    png_path = args.png or json_path.with_suffix(".png")

    net = Network(plan(params))
    work = Path(tempfile.mkdtemp(prefix=f"{params.prefix}-branch-", dir=_work_root()))
    harness = Harness(net, work, options)

    def last_resort() -> None:
        harness.procs.kill_all_now()
        net.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    atexit.register(last_resort)
    previous = {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    bound = fluid_bound(params)
    started = time.monotonic()
    try:
        net.up()
        runs = asyncio.run(asyncio.wait_for(run_all(harness, names, args.rounds, bound.seconds, http_bound(params)), args.deadline))
    except (asyncio.TimeoutError, TimeoutError):
        print(f"branch: error: the run exceeded its deadline of {args.deadline:g} s", file=sys.stderr)
        return 1
    finally:
        last_resort()
        atexit.unregister(last_resort)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.keep:
            print(f"branch: work folder kept: {work}", file=sys.stderr)
    report = build_report(params, options, runs)
    report["wall_s"] = round(time.monotonic() - started, 1)
    reporting.write_json(report, json_path)
    try:
        reporting.plot(report, png_path)
    except ImportError:
        print("branch: matplotlib is not installed; no PNG (pip install -e '.[test]')", file=sys.stderr)
    print(reporting.one_line(report))
    return 1 if any(run["error"] for run in runs) else 0


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
