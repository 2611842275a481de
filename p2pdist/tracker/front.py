"""The listening socket's protocol: plain tracker GETs answered in place, the rest to aiohttp.

Why a protocol of its own: announces are nearly all a site server does, and most arrive on a
new connection each. Measured on the 2-core build machine with a trivial handler and a new
connection per request, aiohttp's request machinery alone (a task per connection and per
request, request/response objects, header multidicts) tops out near 3.5k requests/s where a
bare asyncio protocol does 7k and opentracker 8k. So the front reads the request head itself
and, when the store never waits (the memory store), answers inside one ``data_received``.

What the front answers: a complete request head

    GET /announce?<query> HTTP/1.1        (or /scrape; or HTTP/1.0)

whose target is visible ASCII, whose header lines are well formed and within the configured
limits (line size, field size, count), and that has no body: no Content-Length other than 0,
no Transfer-Encoding, Upgrade or Expect. Keep-alive and pipelining follow HTTP/1.1 (HTTP/1.0
keeps the connection only with ``Connection: keep-alive``). ``X-Forwarded-For`` is read only
when proxies are configured; ``service`` decides whether to believe it.

Everything else (another path or method, a body, a head that is malformed or too large) hands
the connection over, with every byte not yet answered, to aiohttp's ``RequestHandler`` for the
same application, which keeps it to the end: same routes, limits and error replies, same port,
same process. The front never accepts a request aiohttp would treat differently in a way that
matters: it only takes body-less GETs, so there is no request smuggling to get wrong.

Idle connections (no complete request for ``keepalive_timeout`` seconds) are closed by one
check a second instead of a timer per connection; the same tick refreshes the Date header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from aiohttp import web

from p2pdist.tracker.service import TrackerService
from p2pdist.tracker.settings import ListenSettings

log = logging.getLogger("p2pdist.tracker.http")

HEAD_LIMIT = 16 * 1024  # bytes of an incomplete head kept before aiohttp's parser takes over
TICK = 1.0
_VISIBLE = bytes(range(0x21, 0x7F))
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_REFUSE = (b"transfer-encoding", b"upgrade", b"expect")
_STATUS = {200: b"200 OK", 400: b"400 Bad Request", 500: b"500 Internal Server Error", 503: b"503 Service Unavailable"}
_ANNOUNCE, _SCRAPE = b"/announce", b"/scrape"


class TrackerFront:
    """The protocol factory handed to ``loop.create_server``, and what its connections share."""

    def __init__(self, service: TrackerService, fallback: Callable[[], asyncio.Protocol], listen: ListenSettings,
                 trust_forwarded: bool = False) -> None:  # fmt: skip
        self.service = service
        self.fallback = fallback  # makes the aiohttp RequestHandler a connection is handed to
        self.max_line_size = listen.max_line_size
        self.max_field_size = listen.max_field_size
        self.max_headers = listen.max_headers
        self.keepalive_timeout = listen.keepalive_timeout
        self.trust_forwarded = trust_forwarded
        self.connections: set[FrontProtocol] = set()
        self.tick = 0.0
        self.date = b""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self) -> FrontProtocol:
        return FrontProtocol(self)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_tick()

    def close(self) -> None:
        """Stop the idle check and close every connection still in the front's hands."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for connection in list(self.connections):
            connection.close()

    def _on_tick(self) -> None:
        assert self._loop is not None
        self.tick = self._loop.time()
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        limit = self.tick - self.keepalive_timeout
        for connection in [c for c in self.connections if c.active < limit]:
            connection.close()
        self._timer = self._loop.call_later(TICK, self._on_tick)

    def reply(self, head: bytes, source: str) -> tuple[bytes, bool] | None:
        """(whole HTTP response, keep the connection open) for one request head, or None when
        the request is not the front's to answer."""
        line_end = head.find(b"\r\n")
        line = head if line_end < 0 else head[:line_end]
        parts = line.split(b" ")
        if len(parts) != 3 or len(line) > self.max_line_size:
            return None
        method, target, version = parts
        if method != b"GET" or target.translate(None, _VISIBLE):
            return None
        path, _, query = target.partition(b"?")
        if path != _ANNOUNCE and path != _SCRAPE or b"#" in query:
            return None
        if version == b"HTTP/1.1":
            keep = True
        elif version == b"HTTP/1.0":
            keep = False
        else:
            return None
        forwarded: str | None = None
        if line_end >= 0:
            lines = head[line_end + 2 :].split(b"\r\n")
            if len(lines) > self.max_headers:
                return None
            for header in lines:
                name, colon, value = header.partition(b":")
                if not colon or not name or name.translate(None, _TOKEN) or len(header) > self.max_field_size:
                    return None
                name = name.lower()
                if name == b"connection":
                    for token in value.lower().split(b","):
                        token = token.strip()
                        if token == b"close":
                            keep = False
                            break
                        if token == b"keep-alive":
                            keep = True
                elif name == b"content-length":
                    if value.strip() != b"0":
                        return None
                elif name in _REFUSE:
                    return None
                elif name == b"x-forwarded-for" and self.trust_forwarded:
                    item = value.strip().decode("latin-1")
                    forwarded = item if forwarded is None else f"{forwarded},{item}"
        try:
            if path == _ANNOUNCE:
                status, body = self.service.announce_now(query, source, forwarded)
            else:
                status, body = self.service.scrape_now(query, source, forwarded)
        except Exception:  # a bug must cost this request only, never the server
            log.exception("tracker request failed")
            status, body, keep = 500, b"d14:failure reason14:internal errore", False
        connection = (b"Connection: keep-alive\r\n" if version == b"HTTP/1.0" else b"") if keep else b"Connection: close\r\n"
        response = b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
            _STATUS[status], len(body), self.date, connection, body,
        )  # fmt: skip
        return response, keep


class FrontProtocol(asyncio.Protocol):
    """One connection while the front serves it; see the module doc for what it answers."""

    __slots__ = ("front", "transport", "source", "buffer", "active", "paused")

    def __init__(self, front: TrackerFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.buffer = b""
        self.active = front.tick  # last time a request (or part of one) arrived
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.source = peer[0] if isinstance(peer, tuple) else ""
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:  # the client does not read its replies: stop reading requests
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # the client is done sending: close once the replies are written

    def data_received(self, data: bytes) -> None:
        front = self.front
        transport = self.transport
        if transport is None:
            return
        self.active = front.tick
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        start = 0
        while True:
            end = data.find(b"\r\n\r\n", start)
            if end < 0:
                break
            reply = front.reply(data[start:end], self.source)
            if reply is None:
                self.hand_over(data[start:] if start else data)
                return
            transport.write(reply[0])
            if not reply[1]:
                transport.close()
                self.transport = None
                return
            start = end + 4
        if start < len(data):
            rest = data[start:] if start else data
            if len(rest) > HEAD_LIMIT:
                self.hand_over(rest)
            else:
                self.buffer = rest

    def hand_over(self, data: bytes) -> None:
        """Give the connection, and ``data`` not yet answered, to aiohttp for good."""
        transport = self.transport
        if transport is None:
            return
        self.front.connections.discard(self)
        self.transport = None
        handler: Any = self.front.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.paused:  # keep the flow-control state consistent for the new owner
            handler.pause_writing()
            transport.resume_reading()
        if data:
            handler.data_received(data)


class FrontSite(web.BaseSite):
    """An aiohttp site (so ``AppRunner.cleanup`` stops it) whose connections start in the front."""

    __slots__ = ("_host", "_port", "_front")

    def __init__(self, runner: web.BaseRunner, front: TrackerFront, host: str, port: int, *,
                 ssl_context: Any = None, backlog: int = 1024) -> None:  # fmt: skip
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._front = front

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._front, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog
        )
        self._front.start()

    async def stop(self) -> None:
        await super().stop()  # stop listening first, then close what the front still holds
        self._front.close()
