"""A stand-in for the SMS client's program runner, for tests, the demo and benchmarks.

The SMS client runs a program line, and while it exits with a code from the retry list (1618 is
there by default) runs it again every N seconds (600 by default), up to a number of tries. This
does the same and records when the program finally succeeded, so a benchmark can tell when
every client of a branch had its package installed.

Exit codes are compared as the system delivers them: on POSIX only the low 8 bits survive, so
a retry code of 1618 matches an exit status of 82 there (see exitcodes.visible).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from p2pdist.errors import UsageError
from p2pdist.wrapper.exitcodes import RETRY_DEFAULT, SUCCESS_CODES, from_returncode, visible
from p2pdist.wrapper.options import parse_int, parse_seconds, scan_options

PROG = "p2pdist-smsim"
MAX_RUN_TIME = 7200.0  # SMS's default maximum run time for a program: 120 minutes


@dataclass(frozen=True)
class Attempt:
    """One run of the program: wall-clock start and end (Unix seconds) and its exit code."""

    number: int
    start: float
    end: float
    exit_code: int
    timed_out: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "start": self.start,
            "end": self.end,
            "duration": self.duration,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
        }


@dataclass(frozen=True)
class Result:
    """How the program line fared.

    ``outcome``: ``success`` (a success code), ``failure`` (any other code that is not a retry
    code), ``gave-up`` (still a retry code after the last try) or ``timeout`` (a run exceeded the
    maximum run time and was killed, which SMS does not retry). ``exit_code`` is the last run's.
    """

    argv: tuple[str, ...]
    attempts: tuple[Attempt, ...]
    outcome: str

    @property
    def exit_code(self) -> int:
        return self.attempts[-1].exit_code

    @property
    def start(self) -> float:
        return self.attempts[0].start

    @property
    def end(self) -> float:
        return self.attempts[-1].end

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def succeeded(self) -> bool:
        return self.outcome == "success"

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "outcome": self.outcome,
            "attempts": len(self.attempts),
            "exit_code": self.exit_code,
            "start": self.start,
            "end": self.end,
            "duration": self.duration,
            "durations": [attempt.duration for attempt in self.attempts],
            "runs": [attempt.to_json() for attempt in self.attempts],
        }


async def _run_once(
    argv: Sequence[str],
    number: int,
    *,
    cwd: str | None,
    env: Mapping[str, str] | None,
    max_run_time: float,
    quiet: bool,
) -> Attempt:
    output = asyncio.subprocess.DEVNULL if quiet else None
    start = time.time()
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env) if env is not None else None, stdout=output, stderr=output
    )
    timed_out = False
    try:
        async with asyncio.timeout(max_run_time):
            returncode = await process.wait()
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        returncode = await process.wait()
    finally:
        if process.returncode is None:  # cancelled: do not leave the program behind
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
    return Attempt(number, start, time.time(), from_returncode(returncode), timed_out)


async def simulate(
    argv: Sequence[str],
    *,
    retry_codes: Iterable[int] = (RETRY_DEFAULT,),
    interval: float = 600.0,
    max_attempts: int = 10,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    success_codes: Iterable[int] = SUCCESS_CODES,
    max_run_time: float = MAX_RUN_TIME,
    quiet: bool = False,
) -> Result:
    """Run ``argv`` as the SMS client would: again after ``interval`` s while it exits with a retry code.

    At most ``max_attempts`` runs; each is killed after ``max_run_time`` s. OSError if the
    program cannot be started at all (SMS reports that as a failure to run, not a retry).
    """
    if not argv:
        raise UsageError("no program to run")
    if max_attempts < 1:
        raise UsageError("max_attempts must be at least 1")
    retry = {visible(code) for code in retry_codes}
    success = {visible(code) for code in success_codes}
    attempts: list[Attempt] = []
    for number in range(1, max_attempts + 1):
        if attempts:
            await asyncio.sleep(interval)
        attempt = await _run_once(argv, number, cwd=cwd, env=env, max_run_time=max_run_time, quiet=quiet)
        attempts.append(attempt)
        if attempt.timed_out:
            return Result(tuple(argv), tuple(attempts), "timeout")
        if attempt.exit_code not in retry:
            outcome = "success" if attempt.exit_code in success else "failure"
            return Result(tuple(argv), tuple(attempts), outcome)
    return Result(tuple(argv), tuple(attempts), "gave-up")


USAGE = (
    f"usage: {PROG} [--retry-code N]... [--interval SECONDS] [--max-attempts M] [--max-run-time SECONDS] "
    "[--cwd DIR] [--json FILE] [--quiet] [--] <program> [args...]"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a program line like the SMS client; print the JSON result (or write it to --json FILE).

    Exit status: 0 when the program succeeded, 1 when it failed, gave up or timed out, 2 for
    bad usage or a program that cannot be started.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        scanned = scan_options(
            argv,
            with_value=frozenset({"--retry-code", "--interval", "--max-attempts", "--max-run-time", "--cwd", "--json"}),
            flags=frozenset({"--quiet", "--help"}),
            repeatable=frozenset({"--retry-code"}),
        )
        if scanned.has("--help"):
            print(USAGE)
            return 0
        program = argv[scanned.consumed :]
        if not program:
            raise UsageError("no program to run after the options")
        codes = [parse_int("--retry-code", v or "", low=1, high=2**31 - 1) for k, v in scanned.options if k == "--retry-code"]
        interval = parse_seconds("--interval", scanned.value("--interval") or "600", high=86400)
        attempts = parse_int("--max-attempts", scanned.value("--max-attempts") or "10", low=1, high=10000)
        run_time = parse_seconds("--max-run-time", scanned.value("--max-run-time") or str(MAX_RUN_TIME), high=86400)
    except UsageError as exc:
        print(f"{PROG}: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(
            simulate(
                program,
                retry_codes=codes or (RETRY_DEFAULT,),
                interval=interval,
                max_attempts=attempts,
                cwd=scanned.value("--cwd"),
                max_run_time=run_time,
                quiet=scanned.has("--quiet"),
            )
        )
    except OSError as exc:
        print(f"{PROG}: cannot start {program[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    text = json.dumps(result.to_json(), indent=2)
    if target := scanned.value("--json"):
        try:
            with open(target, "w", encoding="utf-8") as out:
                out.write(text + "\n")
        except OSError as exc:
            print(f"{PROG}: cannot write {target}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"{PROG}: {result.outcome} after {len(result.attempts)} attempt(s), exit code {result.exit_code}")
    else:
        print(text)
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
