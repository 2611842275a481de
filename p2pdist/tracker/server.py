"""Running the site server: listening socket, optional TLS, graceful shutdown, uvloop.

``start`` is shared by ``p2pdist server`` and the tests, so the tests exercise the same limits
on request line and header sizes as production. One socket, one application: every connection
starts in the HTTP front (``front``), which holds the per-address connection cap and the
request-head deadline; with the memory store it answers plain announces and scrapes itself and
hands every other request to the aiohttp application; with a store that waits (Redis) it hands
every request over once its head is complete. ``serve`` (the process) also raises the
open-file limit (``fdlimit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from dataclasses import dataclass

from aiohttp import web

from p2pdist.errors import InputError
from p2pdist.tracker.fdlimit import raise_fd_limit
from p2pdist.tracker.front import FrontSite, TrackerFront
from p2pdist.tracker.settings import ListenSettings, ServerSettings
from p2pdist.tracker.web import STATE, build_app

log = logging.getLogger("p2pdist.tracker")
BACKLOG = 1024  # pending connections the kernel queues: bursts of new-connection announces
# After an error reply to a request whose body is unread (too large, too slow), aiohttp reads
# and drops the rest this long so the client sees the reply: 10 s by default, which a client
# trickling the body turns into 10 s more of its socket.
LINGER = 2.0


@dataclass
class RunningServer:
    runner: web.AppRunner
    site: web.BaseSite
    port: int
    scheme: str
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


def ssl_context(listen: ListenSettings) -> ssl.SSLContext | None:
    if listen.tls_cert is None or listen.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(listen.tls_cert, listen.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load TLS certificate {listen.tls_cert} / key {listen.tls_key}: {exc}") from None
    return context


async def start(app: web.Application, listen: ListenSettings, host: str | None = None, port: int | None = None) -> RunningServer:
    """Start ``app`` on ``host:port`` (defaults from ``listen``; port 0 picks a free one)."""
    runner = web.AppRunner(
        app,
        access_log=None,  # no per-request logging: a tracker answers thousands a second
        tcp_keepalive=False,  # idle keep-alive connections are closed by aiohttp's own timeout
        # aiohttp's keep-alive timer is a deadline from the hand-over and from each reply, which
        # bounds a trickled head on the connections it serves the way the front's does.
        keepalive_timeout=min(listen.keepalive_timeout, listen.head_timeout),
        lingering_time=LINGER,
        # Malformed requests from clients are logged here, apart from the server's own messages.
        logger=logging.getLogger("p2pdist.tracker.http"),
        max_line_size=listen.max_line_size,
        max_field_size=listen.max_field_size,
        max_headers=listen.max_headers,
        shutdown_timeout=listen.shutdown_timeout,
    )
    await runner.setup()
    context = ssl_context(listen)
    host = host if host is not None else listen.host
    port = listen.port if port is None else port
    state = app[STATE]
    assert runner.server is not None
    front = TrackerFront(state.service, runner.server, listen, trust_forwarded=state.sites.has_proxies,
                         answers=state.service.synchronous, exempt=state.sites.is_proxy)  # fmt: skip
    site: web.BaseSite = FrontSite(runner, front, host, port, ssl_context=context, backlog=BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InputError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror}") from None
    # A started site's server is the loop's Server, which has sockets; aiohttp types it AbstractServer.
    sockets = site._server.sockets if site._server else ()  # type: ignore[attr-defined]  # noqa: SLF001
    bound = sockets[0].getsockname()[1] if sockets else port
    return RunningServer(runner, site, bound, "https" if context else "http", host)


async def serve(settings: ServerSettings) -> None:
    """Run until SIGINT/SIGTERM, then let open requests finish and close the stores."""
    raise_fd_limit()
    app = build_app(settings)
    server = await start(app, settings.listen)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise show up as latency spikes on a tracker with many peers.
    gc.collect()
    gc.freeze()
    log.info("p2pdist site server listening on %s", server.url)
    print(f"p2pdist server listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(settings: ServerSettings) -> int:
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]  # Windows has no uvloop
    if uvloop is not None:
        uvloop.run(serve(settings))
    else:
        asyncio.run(serve(settings))
    return 0
