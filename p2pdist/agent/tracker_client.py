"""Announcing a torrent to its HTTP trackers (BEP 3, BEP 12 tiers, BEP 23 compact peers).

One loop per torrent: ``started`` first, then a re-announce every interval the tracker asks for,
``completed`` as soon as the download completes, ``stopped`` on shutdown. A tracker that cannot be
reached or refuses is retried with exponential backoff (15 s up to 30 min, or its BEP 31
``retry in``); meanwhile the torrent keeps serving the peers it already knows. Within a tier the
tracker that answered moves to the front, as BEP 12 says.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import aiohttp

from p2pdist.httpio import read_capped
from p2pdist.agent.torrent import Torrent, TorrentState
from p2pdist.errors import RemoteError
from p2pdist.tracker.announce import (
    MAX_RESPONSE_BYTES,
    AnnounceRequest,
    AnnounceResponse,
    TrackerFailure,
    build_announce_url,
    parse_announce_response,
)

log = logging.getLogger("p2pdist.tracker_client")

MIN_BACKOFF = 15.0
MAX_BACKOFF = 1800.0


class TrackerUnreachable(RemoteError):
    """No tracker of the torrent answered."""


@dataclass
class TrackerStatus:
    last_success: float | None = None
    last_error: str | None = None
    next_announce: float = 0.0
    peers_received: int = 0
    complete: int = 0
    incomplete: int = 0


class TrackerClient:
    def __init__(
        self,
        torrent: Torrent,
        http: aiohttp.ClientSession,
        *,
        port: int,
        numwant: int = 50,
        timeout: float = 15.0,
        rng: random.Random | None = None,
    ) -> None:
        self.torrent = torrent
        self.http = http
        self.port = port
        self.numwant = numwant
        self.timeout = timeout
        rng = rng or random.Random()
        self.tiers: list[list[str]] = []
        for tier in torrent.meta.trackers:
            urls = list(tier)
            rng.shuffle(urls)  # BEP 12: shuffle each tier once
            self.tiers.append(urls)
        self.status = TrackerStatus()
        self._failures = 0
        self._wake = asyncio.Event()
        self._pending_event = "started"
        self._key = f"{rng.getrandbits(32):08x}"
        torrent.add_listener(self._on_torrent_event)

    def _on_torrent_event(self, event: str) -> None:
        if event == "completed":
            self._pending_event = "completed"
            self._wake.set()

    def _request(self, event: str) -> AnnounceRequest:
        torrent = self.torrent
        return AnnounceRequest(
            info_hash=torrent.info_hash,
            peer_id=torrent.peer_id,
            port=self.port,
            uploaded=torrent.upload_meter.total,
            downloaded=torrent.download_meter.total,
            left=torrent.left,
            event=event,
            numwant=0 if event == "stopped" else self.numwant,
            key=self._key,
        )

    async def announce(self, event: str = "") -> AnnounceResponse:
        """One announce through the tiers; the first tracker that answers wins."""
        if not self.tiers:
            raise TrackerUnreachable("torrent names no tracker")
        errors: list[str] = []
        retry_in: int | None = None
        for tier in self.tiers:
            for position, url in enumerate(list(tier)):
                try:
                    response = await self._announce_one(url, self._request(event))
                except TrackerFailure as exc:
                    errors.append(f"{url}: {exc.reason}")
                    retry_in = exc.retry_in if exc.retry_in is not None else retry_in
                    continue
                except (RemoteError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    errors.append(f"{url}: {exc or type(exc).__name__}")
                    continue
                tier.insert(0, tier.pop(position))
                return response
        error = TrackerUnreachable("; ".join(errors))
        error.retry_in = retry_in  # type: ignore[attr-defined]
        raise error

    async def _announce_one(self, url: str, request: AnnounceRequest) -> AnnounceResponse:
        full = build_announce_url(url, request)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self.http.get(full, timeout=timeout, allow_redirects=False) as reply:
            if reply.status != 200:
                raise TrackerUnreachable(f"HTTP {reply.status}")
            body = await read_capped(reply.content, MAX_RESPONSE_BYTES)
            if body is None:
                raise TrackerUnreachable("response too large")
        return parse_announce_response(body)

    async def run(self) -> None:
        """Announce until cancelled; call ``stop()`` for the final ``stopped``."""
        while True:
            event, self._pending_event = self._pending_event, ""
            try:
                response = await self.announce(event)
            except TrackerUnreachable as exc:
                self._failures += 1
                delay = min(MAX_BACKOFF, MIN_BACKOFF * 2 ** (self._failures - 1))
                retry_in = getattr(exc, "retry_in", None)
                if retry_in:
                    delay = max(delay, float(retry_in))
                self.status.last_error = str(exc)
                if event:
                    self._pending_event = event  # say it again next time
                log.warning("%s: tracker unreachable, retrying in %.0f s: %s", self.torrent.info.name, delay, exc)
            else:
                self._failures = 0
                self.status.last_success = time.time()
                self.status.last_error = response.warning
                self.status.peers_received += len(response.peers)
                self.status.complete = response.complete
                self.status.incomplete = response.incomplete
                self.torrent.tracker_answered = True
                self.torrent.add_peer_addresses(response.peers)
                delay = float(max(response.interval, response.min_interval or 0, 5))
            self.status.next_announce = time.time() + delay
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            if self.torrent.state is TorrentState.STOPPED:
                return

    async def stop(self, timeout: float = 5.0) -> None:
        """Tell the trackers we leave (best effort, bounded in time)."""
        if self.status.last_success is None:
            return
        try:
            await asyncio.wait_for(self.announce("stopped"), timeout=timeout)
        except (TrackerUnreachable, asyncio.TimeoutError):
            pass
