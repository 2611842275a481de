"""The HTTP front over real sockets: keep-alive, pipelining, partial reads, hand-over to aiohttp.

Every request here goes to a real server on 127.0.0.1 as raw bytes, so what the front accepts,
refuses and hands to aiohttp is seen exactly as a client sees it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import replace
from pathlib import Path

import pytest

from p2pdist import bencode
from p2pdist.tracker.announce import parse_announce_response
from p2pdist.tracker.front import FrontSite
from p2pdist.tracker.settings import ListenSettings, SiteSettings
from p2pdist.tracker.web import STATE
from tests.support.rawhttp import Conversation, get
from tests.support.siteserver import (
    SITES,
    announce_target,
    info_hash_of,
    make_settings,
    publish,
    quoted,
    running,
    signed_torrent,
)
from tests.support.tls import self_signed

TORRENT = signed_torrent()
IH = info_hash_of(TORRENT)


async def talk(port: int, script, source: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    """Run ``script(conversation)`` in a thread (blocking sockets), closing the socket after."""

    def run():  # type: ignore[no-untyped-def]
        conversation = Conversation.open(port, source)
        try:
            return script(conversation)
        finally:
            conversation.close()

    return await asyncio.to_thread(run)


async def test_keep_alive_pipelining_and_partial_heads(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        assert isinstance(server.site, FrontSite)  # the memory store: connections start in the front
        await publish(server, TORRENT)

        def script(c: Conversation):  # type: ignore[no-untyped-def]
            c.send(get(announce_target(1, 7001)) + get(announce_target(2, 7002)))  # pipelined in one write
            first, second = c.response(), c.response()
            request = get(announce_target(3, 7003))
            for i in range(len(request)):  # one byte at a time
                c.send(request[i : i + 1])
                time.sleep(0.001 if i % 40 == 0 else 0)
            third = c.response()
            c.send(get(announce_target(4, 7004), headers="Connection: close\r\n"))
            fourth = c.response()
            return first, second, third, fourth, c.closed()

        first, second, third, fourth, closed = await talk(server.port, script, "127.1.0.5")
    for status, headers, body in (first, second, third):
        assert status == 200 and b"connection" not in headers and headers[b"date"].endswith(b"GMT")
        assert headers[b"content-type"] == b"text/plain" and int(headers[b"content-length"]) == len(body)
    assert parse_announce_response(second[2]).peers == (("127.1.0.5", 7001),)
    assert set(parse_announce_response(third[2]).peers) == {("127.1.0.5", 7001), ("127.1.0.5", 7002)}
    assert fourth[0] == 200 and fourth[1][b"connection"] == b"close" and closed


async def test_http_10_closes_unless_asked_to_keep_alive(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        await publish(server, TORRENT)

        def script(c: Conversation):  # type: ignore[no-untyped-def]
            c.send(get(announce_target(1, 7001), "1.0", "Connection: keep-alive\r\n"))
            kept = c.response()
            c.send(get(announce_target(1, 7001), "1.0"))
            last = c.response()
            return kept, last, c.closed()

        kept, last, closed = await talk(server.port, script, "127.1.0.5")
    assert kept[1][b"connection"] == b"keep-alive" and last[1][b"connection"] == b"close" and closed


async def test_other_requests_are_handed_to_aiohttp_on_the_same_connection(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        await publish(server, TORRENT)

        def script(c: Conversation):  # type: ignore[no-untyped-def]
            # an announce the front answers, then the repository API pipelined behind it
            c.send(get(announce_target(1, 7001)) + get("/api/packages"))
            announce, packages = c.response(), c.response()
            c.send(get(announce_target(2, 7002)))  # aiohttp owns the connection now, and still answers
            after = c.response()
            return announce, packages, after

        announce, packages, after = await talk(server.port, script, "127.1.0.5")
        assert announce[0] == 200 and b"json" in packages[1][b"content-type"] and b"PS100012" in packages[2]
        assert parse_announce_response(after[2]).peers == (("127.1.0.5", 7001),)

        cases = [
            # (request, expected status, what must be in the body)
            (f"POST {announce_target(3, 7003)} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".encode(), 405, b""),
            (get(announce_target(3, 7003), headers="Content-Length: 3\r\n")[:-2] + b"\r\nabc", 200, b"8:interval"),
            (get(announce_target(3, 7003), headers="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n", 200, b"interval"),
            (get("/announce?port=1&left=0&info_hash=%ZZ"), 400, b"bad %-escape"),
            (get("/scrape"), 400, b"full scrape"),
            (get("/announce%3Fx"), 404, b""),  # an escaped path is aiohttp's to route
            (get(announce_target(3, 7003), headers="Bad Name: 1\r\n"), 400, b""),
            (b"GET /announce?" + b"a" * 20000, 400, b""),  # no end of head in sight
        ]
        for request, status, needle in cases:

            def once(c: Conversation, request: bytes = request):  # type: ignore[no-untyped-def]
                c.send(request)
                return c.response()

            got = await talk(server.port, once, "127.1.0.6")
            assert got[0] == status and needle in got[2], (request[:80], got)


async def test_idle_connections_are_closed(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings = replace(settings, listen=replace(settings.listen, keepalive_timeout=1.0))
    async with running(settings) as server:
        await publish(server, TORRENT)

        def script(c: Conversation):  # type: ignore[no-untyped-def]
            c.send(get(announce_target(1, 7001)))
            status = c.response()[0]
            began = time.monotonic()
            c.send(b"GET /announce?info_hash=")  # a head that never ends
            return status, c.closed(within=6.0), time.monotonic() - began

        status, closed, waited = await talk(server.port, script, "127.1.0.5")
    assert status == 200 and closed and waited < 4.0


async def test_a_failing_request_costs_only_itself(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        await publish(server, TORRENT)
        state = server.runner.app[STATE]
        tracked = state.tracker.is_tracked
        state.tracker.is_tracked = lambda info_hash: 1 // 0  # type: ignore[assignment, misc]
        try:

            def broken(c: Conversation):  # type: ignore[no-untyped-def]
                c.send(get(announce_target(1, 7001)))
                return c.response(), c.closed()

            (status, _, body), closed = await talk(server.port, broken, "127.1.0.5")
        finally:
            state.tracker.is_tracked = tracked  # type: ignore[method-assign]
        assert status == 500 and b"internal error" in body and closed

        def healthy(c: Conversation):  # type: ignore[no-untyped-def]
            c.send(get(announce_target(1, 7001)))
            return c.response()

        assert (await talk(server.port, healthy, "127.1.0.5"))[0] == 200


async def test_forwarded_for_headers_are_joined_from_a_proxy(tmp_path: Path) -> None:
    sites = (*SITES, SiteSettings("Proxied", ("127.9.0.0/16",)))
    async with running(make_settings(tmp_path, sites=sites, proxies=("127.5.5.5",))) as server:
        await publish(server, TORRENT)

        def script(c: Conversation):  # type: ignore[no-untyped-def]
            # two X-Forwarded-For headers: the rightmost entry that is not a proxy is the client
            c.send(get(announce_target(1, 7001), headers="X-Forwarded-For: 127.1.0.9\r\nX-Forwarded-For: 127.9.0.9\r\n"))
            c.response()
            c.send(get(announce_target(2, 7002)))
            return c.response()

        _, _, body = await talk(server.port, script, "127.5.5.5")
        proxied = parse_announce_response(body)  # the proxy itself is in no site
        assert proxied.peers == () and proxied.warning
        counts = await server.runner.app[STATE].store.counts(IH, server.runner.app[STATE].store.clock())
        assert counts["Proxied"].leechers == 1 and "Branch" not in counts


async def test_tls_connections_start_in_the_front_too(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = make_settings(tmp_path)
    settings = replace(settings, listen=ListenSettings(host="127.0.0.1", port=0, tls_cert=cert, tls_key=key),
                       public_url="https://127.0.0.1")
    context = ssl.create_default_context(cafile=str(cert))
    async with running(settings) as server:
        assert server.url.startswith("https://") and isinstance(server.site, FrontSite)

        def script():  # type: ignore[no-untyped-def]
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            c = Conversation(context.wrap_socket(raw, server_hostname="127.0.0.1"))
            try:
                # the front answers the scrape, then hands the TLS connection to aiohttp
                c.send(get("/scrape?info_hash=" + quoted(IH)) + get("/api/packages"))
                return c.response(), c.response()
            finally:
                c.close()

        scrape, packages = await asyncio.to_thread(script)
    assert scrape[0] == 200 and bencode.decode(scrape[2]) == {b"files": {}}  # not published: left out
    assert packages[0] == 200 and b"packages" in packages[2]


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_unknown_torrent_refusal_goes_back_bencoded(tmp_path: Path, version: str) -> None:
    async with running(make_settings(tmp_path)) as server:

        def script(c: Conversation):  # type: ignore[no-untyped-def]
            c.send(get(announce_target(1, 7001), version))
            return c.response()

        status, headers, body = await talk(server.port, script, "127.1.0.5")
    assert status == 200 and int(headers[b"content-length"]) == len(body)
    assert bencode.decode(body)[b"failure reason"].startswith(b"torrent is not published")


def test_uvloop_transports_are_handed_over_plain_and_tls(tmp_path: Path) -> None:
    """As ``p2pdist server`` runs (uvloop; the other tests use asyncio's own loop): the front
    answers, then hands the same connection, plain or TLS, to aiohttp."""
    uvloop = pytest.importorskip("uvloop")
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))

    async def scenario(tls: bool) -> bytes:
        settings = make_settings(tmp_path / ("tls" if tls else "plain"))
        if tls:
            settings = replace(settings, listen=ListenSettings(host="127.0.0.1", port=0, tls_cert=cert, tls_key=key),
                               public_url="https://127.0.0.1")
        async with running(settings) as server:
            assert isinstance(server.site, FrontSite)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context if tls else None, server_hostname="127.0.0.1" if tls else None
            )
            writer.write(get("/scrape?info_hash=" + quoted(IH)) + get("/api/packages", headers="Connection: close\r\n"))
            data = await asyncio.wait_for(reader.read(), 10)  # to the end: the second reply closes
            writer.close()
            return data

    for tls in (False, True):
        data = uvloop.run(scenario(tls))
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2, data[:300]
        assert b"d5:filesdee" in data and b'"packages"' in data
