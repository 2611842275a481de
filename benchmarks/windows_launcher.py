"""What the C launcher costs: ``p2pdist-wrapper.exe``'s "not ready" answer against ``python.exe -m p2pdist.wrapper``.

Run on Windows python (under Wine on Linux) with a bundle from scripts/windows-bundle::

    scripts/windows-bundle .windows/bundle-out
    scripts/windows-env --run benchmarks/windows_launcher.py .windows/bundle-out/p2pdist-0.1.0-win64.zip [--runs 15]

The bundle is unpacked into a temporary folder (as SMS holds a package); a site server and one
agent (tests/windows/lane.py) answer for a package they cannot have yet, so each run is a whole
"not ready" round trip ending in exit 1618. The two ways are interleaved (A B A B ...: the
machine drifts) after one warm-up each (the first run compiles the bytecode), and the figure is
the median of the per-pair differences. Under Wine these are Wine figures, not Windows figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "windows"))

from lane import WINE, DistributionPoint, Site, running_agent  # noqa: E402


def timed(line: str) -> float:
    begin = time.perf_counter()
    code = subprocess.run(line, capture_output=True, stdin=subprocess.DEVNULL, timeout=120).returncode
    elapsed = time.perf_counter() - begin
    assert code == 1618, (line, code)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="p2pdist-<version>-win64.zip")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    if sys.platform != "win32":
        print("run this on Windows python: scripts/windows-env --run benchmarks/windows_launcher.py ZIP", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="p2pdist-bench-") as name:
        work = Path(name)
        with zipfile.ZipFile(args.bundle) as bundle:
            bundle.extractall(work / "pkg")
        (work / "share").mkdir()
        dp = DistributionPoint(work / "share")
        dp.start()
        site = Site(work, dp)
        try:
            site.start()
            with running_agent(work / "pc", site) as agent:
                tail = (
                    f'--agent {agent.control} --token-file "{agent.token_file}" --log "{work / "wrapper.log"}" '
                    "--pkg BL1000FF cmd /c exit 0"
                )
                ways = {
                    "p2pdist-wrapper.exe": f'"{work / "pkg" / "p2pdist-wrapper.exe"}" {tail}',
                    "python.exe -m p2pdist.wrapper": f'"{work / "pkg" / "python" / "python.exe"}" -I -m p2pdist.wrapper {tail}',
                }
                for line in ways.values():
                    timed(line)  # warm-up: bytecode written, files in the page cache
                times: dict[str, list[float]] = {way: [] for way in ways}
                for _ in range(args.runs):
                    for way, line in ways.items():
                        times[way].append(timed(line))
        finally:
            site.stop()
            dp.stop()
    exe, py = (times[way] for way in ways)
    extra = [a - b for a, b in zip(exe, py, strict=True)]
    label = "under Wine 8 (Wine figures, not Windows figures)" if WINE else "on Windows"
    result = {
        "platform": label,
        "runs": args.runs,
        "exe_median_ms": round(statistics.median(exe) * 1000),
        "python_median_ms": round(statistics.median(py) * 1000),
        "launcher_cost_median_ms": round(statistics.median(extra) * 1000),
    }
    print(
        f'"not ready" answer {label}: p2pdist-wrapper.exe median {result["exe_median_ms"]} ms, '
        f'python.exe -m p2pdist.wrapper median {result["python_median_ms"]} ms, '
        f'the launcher adds {result["launcher_cost_median_ms"]} ms (median of {args.runs} interleaved pairs)'
    )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "windows_launcher.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
