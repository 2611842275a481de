"""How fast the wrapper answers on Windows CPython: "not ready" and "complete -> command started".

Run on Windows python (under Wine on Linux, after ``scripts/windows-env``)::

    scripts/windows-env --run benchmarks/windows_wrapper.py [--runs 9]

It starts a site server, a distribution point and one agent (the Windows lane's parts, from
tests/windows/lane.py), lets the agent download a small package, then starts the wrapper from a
Windows parent as the SMS client does, ``--runs`` times each:

- not ready: a package the agent cannot have yet; from CreateProcess to the wrapper's exit
  with 1618;
- complete -> command started: from CreateProcess of the wrapper to the first line of the
  command (a python script that notes the time), and the same command started directly, whose
  start-up is the floor.

Prints medians (and min/max) in milliseconds. Under Wine these are Wine figures, not Windows
figures: process creation and python start-up cost more there.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "windows"))

from lane import WINE, DistributionPoint, Site, running_agent  # noqa: E402

STARTED = b"import sys, time\nopen(sys.argv[1], 'w').write(repr(time.time()))\n"


def summary(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"{name}: median {statistics.median(ms):.0f} ms (min {min(ms):.0f}, max {max(ms):.0f}, {len(ms)} runs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    if sys.platform != "win32":
        print("run this on Windows python: scripts/windows-env --run benchmarks/windows_wrapper.py", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="p2pdist-bench-") as name:
        work = Path(name)
        (work / "share").mkdir()
        dp = DistributionPoint(work / "share")
        dp.start()
        site = Site(work, dp)
        try:
            site.start()
            site.publish("BW100001", {"started.py": STARTED, "payload.bin": os.urandom(1 << 20)})
            with running_agent(work / "pc", site) as agent:
                agent.wait_complete("BW100001")
                path = agent.call("status", "BW100001").path
                prefix = (
                    f'"{sys.executable}" -m p2pdist.wrapper --agent {agent.control} --token-file "{agent.token_file}" '
                    f'--log "{work / "wrapper.log"}"'
                )
                env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
                not_ready, via_wrapper, direct = [], [], []
                for run in range(args.runs):
                    begin = time.perf_counter()
                    code = subprocess.run(f"{prefix} --pkg BW1000FF python.exe x.py", env=env, capture_output=True, stdin=subprocess.DEVNULL).returncode
                    not_ready.append(time.perf_counter() - begin)
                    assert code == 1618, code
                    mark = work / f"started-{run}"
                    begin = time.time()
                    code = subprocess.run(
                        f'{prefix} --pkg BW100001 python.exe started.py "{mark}"', env=env, capture_output=True, stdin=subprocess.DEVNULL
                    ).returncode
                    assert code == 0, code
                    via_wrapper.append(float(mark.read_text()) - begin)
                    begin = time.time()
                    subprocess.run([sys.executable, os.path.join(path, "started.py"), str(mark)], capture_output=True, stdin=subprocess.DEVNULL)
                    direct.append(float(mark.read_text()) - begin)
        finally:
            site.stop()
            dp.stop()
    label = " (under Wine 8: Wine figures, not Windows figures)" if WINE else ""
    print(f"p2pdist-wrapper on Windows CPython {sys.version.split()[0]}{label}")
    print(summary('"not ready" answer (exit 1618)', not_ready))
    print(summary("complete -> command started, through the wrapper", via_wrapper))
    print(summary("the same command started directly (floor)", direct))
    return 0


if __name__ == "__main__":
    sys.exit(main())
