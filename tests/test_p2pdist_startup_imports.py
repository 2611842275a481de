"""The short-lived commands stay light: a real wrapper run and a real ``p2pdist status``, each in
a fresh interpreter, talk to an agent stand-in on a Unix socket and must not have imported the
event loop, the HTTP library, the crypto library or the engine on the way; nor may a real
``p2pdist create`` (timed against mktorrent as a command). What their start-up costs is measured
by benchmarks/startup.py and benchmarks/create_speed.py, not here."""

from __future__ import annotations

import http.server
import json
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the stand-in listens on a Unix socket")

# Each costs a start what the wrapper and status never need (asyncio alone was most of it;
# typing, dataclasses with inspect, pathlib and subprocess were most of what remained).
HEAVY = (
    "asyncio",
    "typing",
    "dataclasses",
    "inspect",
    "pathlib",
    "subprocess",
    "datetime",
    "aiohttp",
    "ssl",
    "cryptography",
    "uvloop",
    "concurrent.futures",
    "platformdirs",
    "hashlib",
    "p2pdist.bencode",
    "p2pdist.metainfo.model",
    "p2pdist.wire",
    "p2pdist.storage",
    "p2pdist.agent.daemon",
    "p2pdist.engine.torrent",
    "jinja2",  # the site server's page; nothing on a PC renders one
    "aiohttp_jinja2",
    "markupsafe",
)
DOWNLOADING = {"package_id": "PS100012", "version": 3, "state": "downloading", "progress": 0.4, "size": 1 << 20, "peers": 1}

# Runs the command in-process after the interpreter's own start, then reports what it imported.
DRIVER = """
import json, sys
kind, address, log = sys.argv[1:4]
if kind == "wrapper":
    from p2pdist.wrapper.__main__ import invoke
    code = invoke(["--agent", address, "--log", log, "--pkg", "PS100012", "true"], cwd="/")
elif kind == "create":
    from p2pdist.cli import main
    code = main(["create", address, "-o", log, "-t", "http://127.0.0.1/announce"])
else:
    from p2pdist.cli import main
    code = main(["status", "--agent", address])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


class _StandIn(http.server.BaseHTTPRequestHandler):
    """Answers the wrapper's ensure with a download in progress, and status's list."""

    calls: list[str] = []

    def _answer(self, body: object) -> None:
        self.calls.append(f"{self.command} {self.path}")
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(DOWNLOADING)

    def do_GET(self) -> None:  # noqa: N802
        self._answer({"packages": [DOWNLOADING]})

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: object) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def stand_in() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="p2ps") as folder:  # AF_UNIX paths are short
        path = Path(folder) / "agent.sock"
        server = _UnixServer(str(path), _StandIn)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        _StandIn.calls = []
        try:
            yield path
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def run(kind: str, address: str, log: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, kind, address, str(log)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def heavy(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY)]


def test_the_wrapper_says_not_ready_without_heavy_imports(stand_in: Path, tmp_path: Path) -> None:
    report = run("wrapper", f"unix:{stand_in}", tmp_path / "wrapper.log")
    assert report["code"] == 1618
    assert _StandIn.calls == ["POST /v1/packages/PS100012/ensure"]  # it asked the agent
    assert "outcome=retry" in (tmp_path / "wrapper.log").read_text()
    assert heavy(report["modules"]) == []


def test_the_wrapper_without_an_agent_imports_nothing_heavy_either(tmp_path: Path) -> None:
    report = run("wrapper", f"unix:{tmp_path / 'nobody.sock'}", tmp_path / "wrapper.log")
    assert report["code"] == 1618
    assert "no agent socket" in (tmp_path / "wrapper.log").read_text()
    assert heavy(report["modules"]) == []


def test_status_lists_the_packages_without_heavy_imports(stand_in: Path, tmp_path: Path) -> None:
    report = run("status", f"unix:{stand_in}", tmp_path / "unused.log")
    assert report["code"] == 0
    assert _StandIn.calls == ["GET /v1/packages"]
    assert heavy(report["modules"]) == []


def test_the_agent_never_loads_the_page_engine() -> None:
    """Only the site server renders HTML: the agent's daemon (which imports the tracker's report
    codec) must not pull in Jinja2."""
    code = "import json, sys, p2pdist.agent.daemon, p2pdist.agent.status_cli; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert "p2pdist.tracker.reports" in modules  # so the tracker package itself was loaded
    assert [m for m in modules if m.split(".")[0] in ("jinja2", "aiohttp_jinja2", "markupsafe")] == []


# What creating a torrent needs beyond the wrapper's set: hashing and the metainfo model.
CREATE_HEAVY = tuple(h for h in HEAVY if h not in ("hashlib", "p2pdist.bencode", "p2pdist.metainfo.model", "pathlib")) + (
    "tempfile",
)


def test_create_imports_nothing_heavy(tmp_path: Path) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(bytes(range(256)) * 400)
    report = run("create", str(source), tmp_path / "out.torrent")
    assert report["code"] == 0 and (tmp_path / "out.torrent").stat().st_size > 0
    modules = report["modules"]
    assert isinstance(modules, list)
    assert [m for m in modules if any(m == h or m.startswith(h + ".") for h in CREATE_HEAVY)] == []
