"""What the tracker answers to one announce or scrape: raw query bytes in, (status, body) out.

Both HTTP layers call this, so they cannot drift apart: the aiohttp handlers in ``web`` and the
lean protocol in ``front`` that answers well-formed tracker requests without aiohttp's request
machinery. It parses (``announce``), places the caller (``sites``), applies the per-address
rate limit and calls the plain ``swarm.Tracker``. Errors go back bencoded, since clients read
``failure reason``: a malformed query is a 400, a refusal (unpublished torrent, rate limit) a
200, a broken shared store a 503 with ``retry in``.

``*_now`` methods never wait; they are used when the tracker's store is synchronous (the memory
store), the coroutine twins otherwise.

Two clocks, because a step of the wall clock must not move a duration: the rate limit reads
the monotonic clock, peer stamps read the store's clock (``PeerStore.clock``: monotonic for the
memory store, the wall clock only where several processes share the stamps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from p2pdist.errors import RemoteError
from p2pdist.tracker.announce import (
    AnnounceError,
    AnnounceRequest,
    encode_failure,
    encode_scrape_response,
    parse_announce_query,
    parse_scrape_query,
)
from p2pdist.tracker.ratelimit import RateLimiter
from p2pdist.tracker.sites import Place, SiteMap
from p2pdist.tracker.store import StoreError
from p2pdist.tracker.swarm import Tracker, TrackerRefusal

log = logging.getLogger("p2pdist.tracker")

RATE_LIMITED = "too many requests from your address; slow down"
STORE_DOWN = "tracker storage temporarily unavailable"
NO_SOURCE = "unknown source address"
FULL_SCRAPE = "full scrape is not offered; name each info_hash"
RETRY_STORE = 60

Reply = tuple[int, bytes]  # HTTP status, bencoded body


class _Early(RemoteError):
    """A reply decided before the tracker is asked (bad query, unknown source, rate limit)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.reply = (status, body)


class TrackerService:
    def __init__(self, tracker: Tracker, sites: SiteMap, limiter: RateLimiter,
                 clock: Callable[[], float] = time.monotonic,
                 peer_clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        self.tracker = tracker
        self.sites = sites
        self.limiter = limiter
        self.clock = clock  # rate limits
        self.peer_clock = peer_clock or tracker.store.clock  # peer stamps, as the store keeps them
        self.synchronous = tracker.synchronous

    def _place(self, source: str, forwarded_for: str | None, ip_param: str | None) -> Place:
        try:
            return self.sites.locate(source, forwarded_for, ip_param)
        except ValueError:  # no or a strange socket address: nothing to place the caller by
            raise _Early(400, encode_failure(NO_SOURCE)) from None

    def _admit(self, place: Place) -> None:
        limiter = self.limiter
        if limiter.rate <= 0:
            return
        now = self.clock()
        if not limiter.allow(place.address, now):
            raise _Early(200, encode_failure(RATE_LIMITED, limiter.retry_after(place.address, now)))

    def _announce_request(self, query: bytes, source: str, forwarded_for: str | None) -> tuple[AnnounceRequest, Place, float]:
        try:
            request = parse_announce_query(query)
        except AnnounceError as exc:
            raise _Early(400, encode_failure(exc.reason)) from None
        if request.port < self.tracker.settings.min_peer_port:
            reason = f"port {request.port} is below {self.tracker.settings.min_peer_port}: peers are never sent to privileged ports"
            raise _Early(200, encode_failure(reason))
        place = self._place(source, forwarded_for, request.ip)
        self._admit(place)
        return request, place, self.peer_clock()

    def announce_now(self, query: bytes, source: str, forwarded_for: str | None = None) -> Reply:
        try:
            request, place, now = self._announce_request(query, source, forwarded_for)
            answer = self.tracker.announce_now(request, place, now)
        except _Early as early:
            return early.reply
        except TrackerRefusal as exc:
            return 200, encode_failure(exc.reason, exc.retry_in, exc.kind)
        return 200, answer.encode(request.compact)

    async def announce(self, query: bytes, source: str, forwarded_for: str | None = None) -> Reply:
        if self.synchronous:
            return self.announce_now(query, source, forwarded_for)
        try:
            request, place, now = self._announce_request(query, source, forwarded_for)
            answer = await self.tracker.announce(request, place, now)
        except _Early as early:
            return early.reply
        except TrackerRefusal as exc:
            return 200, encode_failure(exc.reason, exc.retry_in, exc.kind)
        except StoreError as exc:
            log.warning("%s", exc)
            return 503, encode_failure(STORE_DOWN, RETRY_STORE)
        return 200, answer.encode(request.compact)

    def _scrape_request(self, query: bytes, source: str, forwarded_for: str | None) -> tuple[tuple[bytes, ...], Place, float]:
        try:
            hashes = parse_scrape_query(query)
        except AnnounceError as exc:
            raise _Early(400, encode_failure(exc.reason)) from None
        if not hashes:
            raise _Early(400, encode_failure(FULL_SCRAPE))
        place = self._place(source, forwarded_for, None)
        self._admit(place)
        return hashes, place, self.peer_clock()

    def scrape_now(self, query: bytes, source: str, forwarded_for: str | None = None) -> Reply:
        try:
            hashes, place, now = self._scrape_request(query, source, forwarded_for)
        except _Early as early:
            return early.reply
        return 200, encode_scrape_response(self.tracker.scrape_now(hashes, place, now))

    async def scrape(self, query: bytes, source: str, forwarded_for: str | None = None) -> Reply:
        if self.synchronous:
            return self.scrape_now(query, source, forwarded_for)
        try:
            hashes, place, now = self._scrape_request(query, source, forwarded_for)
            return 200, encode_scrape_response(await self.tracker.scrape(hashes, place, now))
        except _Early as early:
            return early.reply
        except StoreError as exc:
            log.warning("%s", exc)
            return 503, encode_failure(STORE_DOWN, RETRY_STORE)
