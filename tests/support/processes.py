"""p2pdist commands as real child processes: run one to its end, start a server and wait until
it listens, stop it the way a service manager does (SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pdist.config import toml_value
from tests.support.siteserver import PUBLIC_HEX, TOKEN


async def start_process(*args: str) -> asyncio.subprocess.Process:
    """``python *args``, returned once its first line says it listens (the test fails if not)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(20):
        line = await process.stdout.readline()
    if b"listening on" not in line:
        process.kill()
        _, err = await process.communicate()
        pytest.fail(f"server did not start: {line!r} {err.decode()[-2000:]}")
    return process


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m p2pdist *args`` to its end: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, then the exit code (a graceful stop is 0)."""
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        return await process.wait()


# The site server as a process with tight bounds: a 1 s head deadline, CAP sockets per address
# and a soft open-file limit of LOW_SOFT_LIMIT (the process raises it to the hard one at start).
CAP = 4
LOW_SOFT_LIMIT = 256

SITE_TOML = """
data_dir = {data}
admin_token = {token}
public_keys = ["{key}"]
public_url = "http://127.0.0.1"  # what signed_torrent() announces to

[listen]
host = "127.0.0.1"
port = 0
head_timeout = 1.0
body_timeout = 1.0
keepalive_timeout = 60.0
connections_per_address = {cap}

[limits]
announce_rate = 0

[[sites]]
name = "Branch"
subnets = ["127.1.0.0/16"]
"""


@contextlib.contextmanager
def server_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``python -m p2pdist.tracker`` started with a low soft open-file limit; (process, port)."""
    config = tmp_path / "site.toml"
    config.write_text(SITE_TOML.format(data=toml_value(tmp_path / "data"), token=toml_value(TOKEN), key=PUBLIC_HEX, cap=CAP))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(LOW_SOFT_LIMIT, hard), hard))

    process = subprocess.Popen([sys.executable, "-m", "p2pdist.tracker", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=low_limit)  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the server prints its URL once it listens
        if b"listening on" not in line:
            process.kill()
            pytest.fail(f"server did not start: {line!r} {process.communicate(timeout=10)[1][-2000:]!r}")
        yield process, int(line.strip().rsplit(b":", 1)[1])
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


async def in_process(capsys: pytest.CaptureFixture[str], *args: str, token: str | None = None) -> tuple[int, str, str]:
    """The same ``p2pdist`` entry point, run in a thread (it starts its own event loop)."""
    from p2pdist.cli import main

    previous = os.environ.get("P2PDIST_ADMIN_TOKEN")
    os.environ["P2PDIST_ADMIN_TOKEN"] = token or ""
    try:
        code = await asyncio.to_thread(main, list(args))
    finally:
        os.environ.pop("P2PDIST_ADMIN_TOKEN")
        if previous is not None:
            os.environ["P2PDIST_ADMIN_TOKEN"] = previous
    out, err = capsys.readouterr()
    return code, out, err
