"""Start-up cost of the short-lived commands: what SMS and admins wait for on every run.

Times, as whole processes started the way a user starts them (the console scripts beside this
interpreter, bytecode caching on), in interleaved rounds so a neighbour's load hits all alike:

- ``p2pdist-wrapper`` answering "not ready" from a running agent (a real agent, whose site
  server is down: it answers the ensure at once with an error), and with no agent at all;
- ``p2pdist status`` against that agent;
- ``p2pdist create`` of a 100 KB file in /dev/shm (all start-up, hardly any hashing);
- ``python -c pass``, the floor every one of them pays.

    .venv/bin/python benchmarks/startup.py [--rounds 15]

Prints one line per command: the wall-time median and spread (min, quartiles, max) and the
median CPU time (user + system) in milliseconds; CPU time moves less than wall time when a
neighbour loads the machine. Writes benchmarks/results/startup.json. POSIX only (the agent
listens on a Unix socket).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _net import free_port

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
RETRY = 1618 % 256 if os.name == "posix" else 1618  # POSIX keeps the low byte of 1618


def script(name: str) -> list[str]:
    """The installed console script, as an admin or SMS would start it."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: install p2pdist into this environment (scripts/venv.sh)")
    return [str(path)]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict[str, str], expect: int) -> tuple[float, float]:
    """Wall and CPU seconds of one run."""
    cpu, start = children_cpu(), time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    took = time.perf_counter() - start
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}, not {expect}: {result.stderr.decode().strip()}")
    return took, children_cpu() - cpu


def start_agent(work: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    from p2pdist.metainfo.signing import generate_key, raw_public_key

    public = raw_public_key(generate_key().public_key()).hex()
    sock = work / "agent.sock"
    (work / "agent.toml").write_text(  # a repository nothing listens on
        f'repository = "http://127.0.0.1:{free_port()}"\npublic_keys = ["{public}"]\n'
        f'cache_dir = "{work / "cache"}"\nstate_dir = "{work / "state"}"\nlog_file = ""\nlog_level = "error"\n'
        '[engine]\nlisten_host = "127.0.0.1"\nlisten_port = 0\n'
        f'[control]\naddress = "unix:{sock}"\n'
    )
    agent = subprocess.Popen([sys.executable, "-m", "p2pdist.agent", "--config", str(work / "agent.toml")], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not sock.exists():
        if agent.poll() is not None or time.monotonic() > deadline:
            agent.kill()
            raise SystemExit(f"the agent did not come up (exit {agent.returncode})")
        time.sleep(0.05)
    return agent, sock


def spread(samples: list[tuple[float, float]]) -> dict[str, float]:
    ms = sorted(1000 * wall for wall, _ in samples)
    q1, _, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else (ms[0],) * 3
    return {
        "median": round(statistics.median(ms), 1), "min": round(ms[0], 1), "q1": round(q1, 1), "q3": round(q3, 1),
        "max": round(ms[-1], 1), "cpu_median": round(statistics.median(1000 * cpu for _, cpu in samples), 1),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 200:
        parser.error("--rounds must be 1..200")
    # Bytecode caching on, as on an installed system (a shell may have PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    work = Path(tempfile.mkdtemp(prefix="p2pdist-startup-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    agent = None
    try:
        agent, sock = start_agent(work, env)
        tiny = work / "tiny.bin"
        tiny.write_bytes(os.urandom(100_000))
        wrapper = [*script("p2pdist-wrapper"), "--pkg", "PS100001", "--log", str(work / "wrapper.log")]
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], 0),
            "wrapper not-ready (agent)": ([*wrapper, "--agent", f"unix:{sock}", "true"], RETRY),
            "wrapper not-ready (no agent)": ([*wrapper, "--agent", f"unix:{work / 'none.sock'}", "true"], RETRY),
            "status": ([*script("p2pdist"), "status", "--agent", f"unix:{sock}"], 0),
            "create (100 KB)": ([*script("p2pdist"), "create", str(tiny), "-o", str(work / "tiny.torrent"), "-f", "-t", "http://127.0.0.1/announce"], 0),
        }
        for argv, expect in commands.values():
            timed(argv, env, expect)  # warm the bytecode cache and the page cache; not counted
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (argv, expect) in commands.items():
                samples[name].append(timed(argv, env, expect))
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        shutil.rmtree(work, ignore_errors=True)
    result = {name: spread(values) for name, values in samples.items()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rounds": args.rounds, "ms": result, "command": " ".join(sys.argv)}, indent=2))
    for name, s in result.items():
        print(
            f"{name:30s} median {s['median']:6.1f} ms  (min {s['min']:.1f}, quartiles {s['q1']:.1f}-{s['q3']:.1f}, "
            f"max {s['max']:.1f})  cpu {s['cpu_median']:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
