"""Trackers for tests: a scripted HTTP tracker in a thread, and a real opentracker process.

The scripted one answers, refuses, errs or hangs on purpose and records every request line as
the bytes arrived, so a test can check what an announce put on the wire. It runs in its own
thread, so both asyncio tests and tests that drive a ``p2pdist get`` process can use it.
opentracker (Debian's build, whitelist mode) is the stock tracker p2pdist must work with.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from p2pdist import bencode
from tests.support.ports import free_port

ANSWER, REFUSE, HTTP_ERROR, HANG = "answer", "refuse", "http-error", "hang"
REFUSAL = "unregistered torrent, ask your site admin"


class ScriptedTracker:
    """An HTTP tracker on 127.0.0.1 doing what ``mode`` says to every announce."""

    def __init__(self, mode: str = ANSWER, peers: Iterable[tuple[str, int]] = (), interval: int = 1800) -> None:
        self.mode = mode
        self.interval = interval
        self.peers = list(peers)
        self.requests: list[str] = []  # raw request targets, as sent
        self.seen = threading.Condition()
        self._release = threading.Event()
        tracker = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                with tracker.seen:
                    tracker.requests.append(self.path)
                    tracker.seen.notify_all()
                if tracker.mode == HANG:
                    tracker._release.wait(120)
                    return
                if tracker.mode == HTTP_ERROR:
                    self.send_error(400, "Bad Request")
                    return
                if tracker.mode == REFUSE:
                    body = bencode.encode({b"failure reason": REFUSAL.encode()})
                else:
                    compact = b"".join(socket.inet_aton(ip) + port.to_bytes(2, "big") for ip, port in tracker.peers)
                    body = bencode.encode({b"interval": tracker.interval, b"peers": compact, b"complete": 1, b"incomplete": 1})
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/announce"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def wait_requests(self, count: int, timeout: float = 30.0) -> list[str]:
        """The first ``count`` requests, waiting up to ``timeout`` seconds for them."""
        with self.seen:
            if not self.seen.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"tracker saw {len(self.requests)} requests, not {count}, in {timeout} s")
            return list(self.requests)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a tracker that is down)."""
    return free_port()


class OpenTracker:
    """Debian's opentracker on 127.0.0.1 in whitelist mode, for the info-hashes given."""

    def __init__(self, info_hashes: Iterable[bytes], port: int | None = None) -> None:
        self.info_hashes = list(info_hashes)
        self.port = port or closed_port()
        self.url = f"http://127.0.0.1:{self.port}/announce"
        self._root = Path(tempfile.mkdtemp(prefix="p2pdist-ot-"))
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenTracker:
        # opentracker chroots into -d and reads the whitelist from inside it.
        (self._root / "whitelist").write_text("".join(h.hex() + "\n" for h in self.info_hashes))
        os.chmod(self._root, 0o755)
        argv = [binary(), "-i", "127.0.0.1", "-p", str(self.port), "-P", str(self.port), "-d", str(self._root), "-w", "/whitelist"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not self._serving():
            if self._process.poll() is not None or time.monotonic() > deadline:
                error = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                self.__exit__()
                raise AssertionError(f"opentracker did not start: {error}")
            time.sleep(0.05)
        return self

    def _serving(self) -> bool:
        """Listening, and with its whitelist loaded (a thread of its own reads it after start)."""
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        if not self.info_hashes:
            return True
        quoted = "".join(f"%{b:02X}" for b in self.info_hashes[0])
        probe = f"http://127.0.0.1:{self.port}/announce?info_hash={quoted}&peer_id=-PROBE-0000000000000&port=1&uploaded=0&downloaded=0&left=0&compact=1&event=stopped"
        with urllib.request.urlopen(probe, timeout=10) as reply:
            return b"failure reason" not in reply.read()  # "stopped": the probe registers nothing

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(10)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
        shutil.rmtree(self._root, ignore_errors=True)

    def scrape(self, info_hash: bytes) -> dict[bytes, int]:
        """opentracker's counters for ``info_hash``: complete, incomplete, downloaded."""
        url = f"http://127.0.0.1:{self.port}/scrape?info_hash=" + "".join(f"%{b:02X}" for b in info_hash)
        with urllib.request.urlopen(url, timeout=10) as reply:
            files = bencode.decode(reply.read())[b"files"]
        return files.get(info_hash, {})

    def wait_registered(self, info_hash: bytes, *, seeds: int = 0, leechers: int = 0, timeout: float = 30.0) -> None:
        """Until opentracker counts at least that many seeds and leechers of ``info_hash``."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.scrape(info_hash)
            if counts.get(b"complete", 0) >= seeds and counts.get(b"incomplete", 0) >= leechers:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"opentracker counts {counts} for {info_hash.hex()} after {timeout} s")
            time.sleep(0.1)


def binary() -> str:
    return shutil.which("opentracker") or "/usr/bin/opentracker"


def available() -> bool:
    return os.access(binary(), os.X_OK)


@contextlib.contextmanager
def opentracker(info_hashes: Iterable[bytes], port: int | None = None) -> Iterator[OpenTracker]:
    """opentracker serving ``info_hashes``, on ``port`` (one the torrents already name) or any."""
    with OpenTracker(info_hashes, port) as tracker:
        yield tracker


def every_byte_in_twenties(offset: int = 0) -> list[bytes]:
    """13 strings of 20 bytes that hold each of the 256 byte values at least once."""
    values = [(offset + i) % 256 for i in range(260)]
    return [bytes(values[i : i + 20]) for i in range(0, 260, 20)]
