"""HTTP as raw bytes over real sockets: what a server accepts, refuses and answers, seen exactly
as a client sees it (no client library to tidy requests up or read answers leniently)."""

from __future__ import annotations

import contextlib
import socket


def get(target: str, version: str = "1.1", headers: str = "") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: t\r\n{headers}\r\n".encode("latin-1")


class Conversation:
    """One client connection from a chosen 127.x address, reading whole HTTP responses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""

    @classmethod
    def open(cls, port: int, source: str = "127.0.0.1") -> Conversation:
        return cls(socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, headers with lower-case names, body) of the next response."""
        while b"\r\n\r\n" not in self.pending:
            self._fill()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        while len(self.pending) < length:
            self._fill()
        body, self.pending = self.pending[:length], self.pending[length:]
        return int(lines[0].split(b" ")[1]), headers, body

    def closed(self, within: float = 5.0) -> bool:
        """True when the server closes the connection within ``within`` seconds."""
        self.sock.settimeout(within)
        try:
            return self.sock.recv(1) == b""
        except (TimeoutError, socket.timeout):
            return False
        except ConnectionResetError:
            return True

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.pending += chunk

    def close(self) -> None:
        self.sock.close()


def raw_http(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are (no client library to tidy them up) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)
