"""What one Windows python process start costs, with and without cached bytecode.

Run on Windows python (under Wine on Linux, after ``scripts/windows-env``)::

    scripts/windows-env --run benchmarks/windows_start.py [--runs 5]

A Windows process start is the Windows lane's dearest step under Wine, and the lane starts
dozens (site servers, agents, wrappers, the demo's processes). Each case is a new process,
``--runs`` times, timed from CreateProcess to its exit:

- bare: ``python -c pass``, the interpreter alone (its standard library is precompiled in
  python312.zip);
- agent imports, compiled: ``import p2pdist.agent.__main__`` (aiohttp, cryptography, the
  engine) with PYTHONDONTWRITEBYTECODE=1, so every start compiles every module again;
- agent imports, cached: the same with the bytecode cached in a folder of its own
  (PYTHONPYCACHEPREFIX, filled by one run first), as scripts/windows-env arranges for the lane.

Prints medians (and min/max) in milliseconds. Under Wine these are Wine figures, not Windows
figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

AGENT = "import p2pdist.agent.__main__"


def timed(code: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"python -c {code!r} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    return elapsed


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{name:<28} median {statistics.median(ms):7.0f} ms  (min {min(ms):.0f}, max {max(ms):.0f}, n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if sys.platform != "win32":
        raise SystemExit("run on Windows python: scripts/windows-env --run benchmarks/windows_start.py")
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE")}
    with tempfile.TemporaryDirectory(prefix="p2pdist-pycache-") as cache:
        compiled = dict(base, PYTHONDONTWRITEBYTECODE="1")
        cached = dict(base, PYTHONPYCACHEPREFIX=cache)
        timed(AGENT, cached)  # fills the cache
        results: dict[str, list[float]] = {"bare": [], "agent imports, compiled": [], "agent imports, cached": []}
        for _ in range(max(1, args.runs)):  # interleaved, so that the machine's load spreads evenly
            results["bare"].append(timed("pass", base))
            results["agent imports, compiled"].append(timed(AGENT, compiled))
            results["agent imports, cached"].append(timed(AGENT, cached))
    for name, values in results.items():
        print(summary(name, values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
