"""The SMS client simulator: real programs, retried while they exit with a retry code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from p2pdist.errors import UsageError
from p2pdist.wrapper.smsim import main, simulate

# Exits with the codes given on its command line in turn, one per run, counting runs in a file.
SEQUENCE = """
import sys
from pathlib import Path
counter = Path(sys.argv[1])
runs = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(runs + 1))
codes = [int(code) for code in sys.argv[2:]]
sys.exit(codes[min(runs, len(codes) - 1)])
"""


@pytest.fixture
def sequence(tmp_path: Path) -> list[str]:
    script = tmp_path / "sequence.py"
    script.write_text(SEQUENCE)
    return [sys.executable, str(script), str(tmp_path / "count")]


async def test_retries_until_success(sequence: list[str]) -> None:
    result = await simulate([*sequence, "1618", "1618", "0"], interval=0.2, max_attempts=5, quiet=True)
    assert result.outcome == "success" and result.succeeded
    assert [a.exit_code for a in result.attempts] == [82, 82, 0]  # 1618 arrives as 82 on POSIX
    assert result.exit_code == 0
    gaps = [b.start - a.end for a, b in zip(result.attempts, result.attempts[1:])]
    assert all(gap >= 0.2 for gap in gaps)
    assert result.start == result.attempts[0].start and result.end == result.attempts[-1].end
    data = result.to_json()
    assert data["attempts"] == 3 and data["exit_code"] == 0 and data["outcome"] == "success"
    assert len(data["durations"]) == 3 and data["duration"] == pytest.approx(data["end"] - data["start"])
    json.dumps(data)


async def test_gives_up_after_max_attempts(sequence: list[str]) -> None:
    result = await simulate([*sequence, "1618"], interval=0.01, max_attempts=3, quiet=True)
    assert result.outcome == "gave-up" and len(result.attempts) == 3 and not result.succeeded


async def test_a_failure_code_is_not_retried(sequence: list[str]) -> None:
    result = await simulate([*sequence, "1603", "0"], interval=0.01, max_attempts=5, quiet=True)
    assert result.outcome == "failure" and [a.exit_code for a in result.attempts] == [1603 & 0xFF]


async def test_configurable_retry_codes_and_reboot_success(sequence: list[str]) -> None:
    result = await simulate([*sequence, "1008", "1618", "3010"], retry_codes=[1008, 1618], interval=0.01, quiet=True)
    assert result.outcome == "success" and len(result.attempts) == 3
    only_1008 = await simulate([sys.executable, "-c", "raise SystemExit(1618)"], retry_codes=[1008], quiet=True)
    assert only_1008.outcome == "failure" and len(only_1008.attempts) == 1


async def test_a_run_past_the_maximum_run_time_is_killed(tmp_path: Path) -> None:
    result = await simulate([sys.executable, "-c", "import time; time.sleep(30)"], max_run_time=0.3, quiet=True)
    assert result.outcome == "timeout" and result.attempts[0].timed_out
    assert result.attempts[0].duration < 5


async def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        await simulate([])
    with pytest.raises(UsageError):
        await simulate(["true"], max_attempts=0)
    with pytest.raises(OSError):
        await simulate([str(tmp_path / "missing")])


def test_cli_writes_the_json_result(sequence: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    code = main(["--retry-code", "1008", "--retry-code", "1618", "--interval", "0.05", "--quiet",
                 "--json", str(out), "--", *sequence, "1008", "0"])  # fmt: skip
    assert code == 0
    data = json.loads(out.read_text())
    assert data["attempts"] == 2 and data["exit_code"] == 0 and data["argv"][-2:] == ["1008", "0"]
    assert "success after 2 attempt(s)" in capsys.readouterr().out


def test_cli_exit_status_and_errors(sequence: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--max-attempts", "2", "--interval", "0", "--quiet", *sequence, "1618"]) == 1
    assert json.loads(capsys.readouterr().out)["outcome"] == "gave-up"
    assert main(["--interval", "soon", "x"]) == 2
    assert main([]) == 2
    assert main([str(tmp_path / "missing")]) == 2
    assert "cannot start" in capsys.readouterr().err
