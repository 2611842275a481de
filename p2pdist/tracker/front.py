"""The listening socket's protocol: plain tracker GETs answered in place, the rest to aiohttp.

Every connection starts here, whatever the store, so the front is also where what one client
may hold is decided (see "Slow clients" below).

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

Everything else (another path or method, a body, a head that is malformed or too large, and
every request when the store waits, as Redis does) hands the connection over, with every byte
not yet answered, to aiohttp's ``RequestHandler`` for the same application, which serves it to
the end: same routes, limits and error replies, same port, same process. The front never
accepts a request aiohttp would treat differently in a way that matters: it only takes
body-less GETs, so there is no request smuggling to get wrong. It stays the transport's
protocol and passes the callbacks on, so it still sees the connection end.

Slow clients. A socket costs a descriptor whether or not its client ever finishes a request,
so two limits bound what one client can hold:

* a deadline per request head: ``head_timeout`` seconds from the accept, or from the first
  byte of the next request on a kept-alive connection (which may first sit idle for
  ``keepalive_timeout``). A deadline, not an idle timer: a client that trickles a byte a second
  is closed on time. aiohttp's own keep-alive timer, also a deadline, bounds the heads of the
  connections it was handed (``server`` sets it to ``head_timeout``);
* a cap on the connections one source address holds (``connections_per_address``); the excess
  is aborted in ``connection_made``, so its descriptor goes back at once. Configured proxies
  are exempt: their connections carry many clients.

Deadlines are checked by one tick a second instead of a timer per connection (so they hold to
within a second); the same tick refreshes the Date header.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any

from aiohttp import web

from p2pdist.aio import stop_accepting
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
                 trust_forwarded: bool = False, answers: bool = True,
                 exempt: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        self.service = service
        self.fallback = fallback  # makes the aiohttp RequestHandler a connection is handed to
        self.answers = answers  # False: every request goes to aiohttp once its head is complete
        self.max_line_size = listen.max_line_size
        self.max_field_size = listen.max_field_size
        self.max_headers = listen.max_headers
        self.keepalive_timeout = listen.keepalive_timeout
        self.head_timeout = listen.head_timeout
        self.cap = listen.connections_per_address
        self.exempt = exempt or (lambda address: False)  # addresses the cap does not apply to
        self.trust_forwarded = trust_forwarded
        self.connections: set[FrontProtocol] = set()  # those the front serves (deadlines checked)
        self.held: dict[str, int] = {}  # source address -> open connections, handed over or not
        self.refused = 0  # connections closed at accept for the cap, since start
        self.tick = 0.0
        self.date = b""
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refused_logged = 0
        self._logged_at = -60.0

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

    def now(self) -> float:
        return self._loop.time() if self._loop is not None else time.monotonic()

    def admit(self, source: str) -> bool:
        """Count a new connection from ``source``; False when it is over the cap (refuse it)."""
        count = self.held.get(source, 0)
        if count >= self.cap > 0 and not self._exempt(source):
            self.refused += 1
            return False
        self.held[source] = count + 1
        return True

    def _exempt(self, source: str) -> bool:
        try:
            return self.exempt(source)
        except ValueError:  # no usable peer address: nothing to exempt
            return False

    def release(self, source: str) -> None:
        count = self.held.get(source, 0) - 1
        if count > 0:
            self.held[source] = count
        else:
            self.held.pop(source, None)

    def _on_tick(self) -> None:
        assert self._loop is not None
        tick = self.tick = self._loop.time()
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        for connection in [c for c in self.connections if c.deadline < tick]:
            connection.close()
        if self.refused > self._refused_logged and tick - self._logged_at >= 60:
            log.warning("closed %d connections at accept: over listen.connections_per_address (%d)",
                        self.refused - self._refused_logged, self.cap)  # fmt: skip
            self._refused_logged, self._logged_at = self.refused, tick
        self._timer = self._loop.call_later(TICK, self._on_tick)

    def reply(self, head: bytes, source: str) -> tuple[bytes, bool] | None:
        """(whole HTTP response, keep the connection open) for one request head, or None when
        the request is not the front's to answer."""
        if not self.answers:
            return None
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
    """One connection, from accept to close; see the module doc for what it answers."""

    __slots__ = ("front", "transport", "source", "buffer", "deadline", "idle", "paused", "handler", "counted")

    def __init__(self, front: TrackerFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.source = ""
        self.buffer = b""
        self.deadline = 0.0  # when the head being waited for must be complete (loop time)
        self.idle = False  # kept alive after a reply, no byte of the next request yet
        self.paused = False
        self.handler: Any = None  # aiohttp's RequestHandler once the connection is handed over
        self.counted = False  # in front.held

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.source = peer[0] if isinstance(peer, tuple) else ""
        front = self.front
        if not front.admit(self.source):
            # Over the per-address cap: the descriptor goes back now. (A stream server's transport
            # has abort(); the protocol interface types it as the BaseTransport.)
            transport.abort()  # type: ignore[attr-defined]  # see above
            return
        self.counted = True
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's does not subclass asyncio.Transport)
        self.deadline = front.now() + front.head_timeout
        front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        front = self.front
        front.connections.discard(self)
        self.transport = None
        if self.counted:
            self.counted = False
            front.release(self.source)
        if self.handler is not None:
            self.handler.connection_lost(exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:  # the client does not read its replies: stop reading requests
        if self.handler is not None:
            self.handler.pause_writing()
            return
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()
            return
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        if self.handler is not None:
            return self.handler.eof_received()
        return False  # the client is done sending: close once the replies are written

    def data_received(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.data_received(data)
            return
        front = self.front
        transport = self.transport
        if transport is None:
            return
        if self.idle:  # the first byte of the next request starts its head's clock
            self.idle = False
            self.deadline = min(self.deadline, front.now() + front.head_timeout)
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
        if start:  # a request was answered: the next one has a clock of its own
            if start < len(data):
                self.deadline = front.now() + front.head_timeout
            else:
                self.deadline = front.now() + front.keepalive_timeout
                self.idle = True
        if start < len(data):
            rest = data[start:] if start else data
            if len(rest) > HEAD_LIMIT:
                self.hand_over(rest)
            else:
                self.buffer = rest

    def hand_over(self, data: bytes) -> None:
        """Give the connection, and ``data`` not yet answered, to aiohttp for good.

        The front stays the transport's protocol and passes every callback on: the connection
        still counts against its address until it closes."""
        transport = self.transport
        if transport is None:
            return
        self.front.connections.discard(self)  # its deadlines are aiohttp's from here
        self.transport = None
        handler: Any = self.front.fallback()
        self.handler = handler
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
        # A TLS handshake happens before connection_made: bound it like a request head.
        handshake_timeout = self._front.head_timeout if self._ssl_context else None
        self._server = await loop.create_server(
            self._front, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog, ssl_handshake_timeout=handshake_timeout
        )
        self._front.start()

    async def stop(self) -> None:
        if self._server is not None:
            await stop_accepting(self._server)
        await super().stop()  # stop listening first, then close what the front still holds
        self._front.close()
