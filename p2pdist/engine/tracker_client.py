"""Announcing a torrent to its HTTP trackers (BEP 3, BEP 12 tiers, BEP 23 compact peers).

Per torrent: ``started`` first, then a re-announce every interval the tracker asks for,
``completed`` as soon as the download completes, ``stopped`` on shutdown. ``run()`` does it as a
loop in a task; ``start()`` with a timer between announces and a task only while one is on the
wire, for the agent, which holds a thousand torrents announcing every half hour. A tracker that
cannot be reached or refuses is retried with exponential backoff (15 s up to 30 min, or its BEP 31
``retry in``); meanwhile the torrent keeps serving the peers it already knows. Within a tier the
tracker that answered moves to the front, as BEP 12 says.

A tracker that *refuses* (a ``failure reason``, an HTTP error status, an unreadable answer) is
told apart from one that cannot be *reached*: the first is a decision to show the user, the
second a network fault. Each new outcome is logged once as a warning; repeats of the same one
go to the debug log, so a tracker that refuses for a day writes one line, not one per retry.

The announce URL is sent exactly as encoded: every byte of the info-hash and peer id outside
the unreserved set is percent-encoded (BEP 3), and the HTTP client is told not to re-encode it,
since re-normalising puts sub-delimiters such as ``$`` back as raw bytes and stock trackers
(opentracker) answer those with HTTP 400.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from p2pdist.aio import stop_tasks, wait_event
from p2pdist.httpio import read_capped
from p2pdist.engine.timetable import Due, Timetable
from p2pdist.engine.torrent import Torrent, TorrentState
from p2pdist.errors import RemoteError, one_line
from p2pdist.outcomes import Problem
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


def same_origin_tiers(trackers: tuple[tuple[str, ...], ...], site: str) -> tuple[tuple[str, ...], ...]:
    """The tiers' URLs on ``site``'s origin (scheme, host, port), empty tiers dropped.

    An agent announces only to its own site server, whatever a signed torrent names: another
    tracker would learn the PC's address and what it installs.
    """
    want = _origin(site)
    kept = (tuple(url for url in tier if _origin(url) == want) for tier in trackers)
    return tuple(tier for tier in kept if tier)


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = URL(url)
        return parts.scheme.lower(), (parts.host or "").lower(), parts.port
    except (ValueError, TypeError):
        return "", "", None


class AnnounceFailed(RemoteError):
    """No tracker of the torrent took the announce; ``refused`` when one answered with a no."""

    def __init__(self, message: str, *, refused: bool, retry_in: int | None = None) -> None:
        super().__init__(message)
        self.refused = refused
        self.retry_in = retry_in


class TrackerRefused(AnnounceFailed):
    """A tracker answered, and its answer was a refusal (its reason, or an HTTP error status);
    ``not_published`` when the site server said it does not track the torrent (retired)."""

    def __init__(self, message: str, retry_in: int | None = None, *, not_published: bool = False) -> None:
        super().__init__(message, refused=True, retry_in=retry_in)
        self.not_published = not_published


class TrackerUnreachable(AnnounceFailed):
    """No tracker of the torrent answered at all."""

    def __init__(self, message: str) -> None:
        super().__init__(message, refused=False)


@dataclass(slots=True)  # one per package: no __dict__ each
class TrackerStatus:
    last_success: float | None = None
    last_error: str | None = None
    refused: bool = False
    problem: Problem | None = None  # the kind of the last failure; None once a tracker answers
    next_announce: float = 0.0
    peers_received: int = 0
    complete: int = 0
    incomplete: int = 0


class TrackerClient:
    # One per held package: no per-instance dict.
    __slots__ = (
        "on_site_networks", "on_problem", "torrent", "http", "port", "numwant", "timeout", "tiers", "status",
        "_failures", "_wake", "_timetable", "_timer", "_task", "_again", "_pending_event", "_key",
    )

    def __init__(
        self,
        torrent: Torrent,
        http: aiohttp.ClientSession,
        *,
        port: int,
        numwant: int = 50,
        timeout: float = 15.0,
        rng: random.Random | None = None,
        trackers: tuple[tuple[str, ...], ...] | None = None,
        on_site_networks: Callable[[tuple[str, ...]], None] | None = None,
        on_problem: Callable[[], None] | None = None,
        timetable: Timetable | None = None,
    ) -> None:
        """``trackers``: the tiers to announce to, when not all those the torrent names;
        ``on_site_networks``: told the subnets of this PC's site when the site server names them;
        ``on_problem``: called when ``status.problem`` changes; ``timetable``: where ``start()``
        waits between announces (shared by the clients of one agent; else one of its own)."""
        self.on_site_networks = on_site_networks
        self.on_problem = on_problem
        self.torrent = torrent
        self.http = http
        self.port = port
        self.numwant = numwant
        self.timeout = timeout
        shuffle, bits = (rng.shuffle, rng.getrandbits) if rng else (random.shuffle, random.getrandbits)
        self.tiers: list[list[str]] = []
        for tier in torrent.meta.trackers if trackers is None else trackers:
            urls = list(tier)
            shuffle(urls)  # BEP 12: shuffle each tier once
            self.tiers.append(urls)
        self.status = TrackerStatus()
        self._failures = 0
        self._wake: asyncio.Event | None = None  # run(): wakes the loop early
        self._timetable = timetable
        self._timer: Due | None = None  # start(): the next announce
        self._task: asyncio.Task[None] | None = None  # start(): the announce on the wire
        self._again = False
        self._pending_event = "started"
        self._key = f"{bits(32):08x}"
        torrent.add_listener(self._on_torrent_event)

    def _on_torrent_event(self, event: str) -> None:
        if event == "completed":
            self._pending_event = "completed"
            self.wake()

    def wake(self) -> None:
        """Announce now rather than at the next interval (or right after one on the wire)."""
        if self._wake is not None:
            self._wake.set()
        if self._timer is not None:
            self._cancel_timer()
            self._announce_soon()
        elif self._task is not None:
            self._again = True

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
        refusals: list[str] = []
        faults: list[str] = []
        retry_in: int | None = None
        not_published = False
        for tier in self.tiers:
            for position, url in enumerate(list(tier)):
                try:
                    response = await self._announce_one(url, self._request(event))
                except TrackerFailure as exc:
                    refusals.append(f"{url} refused: {one_line(exc.reason)}")
                    retry_in = exc.retry_in if exc.retry_in is not None else retry_in
                    not_published = not_published or exc.kind == Problem.NOT_PUBLISHED
                    continue
                except TrackerRefused as exc:
                    refusals.append(f"{url} refused: {one_line(str(exc))}")
                    continue
                except RemoteError as exc:  # an answer that is not an announce response
                    refusals.append(f"{url} refused: unreadable answer: {one_line(str(exc))}")
                    continue
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    faults.append(f"{url} unreachable: {_reason(exc)}")
                    continue
                tier.insert(0, tier.pop(position))
                return response
        if refusals:
            raise TrackerRefused("; ".join(refusals + faults), retry_in, not_published=not_published)
        raise TrackerUnreachable("; ".join(faults))

    async def _announce_one(self, url: str, request: AnnounceRequest) -> AnnounceResponse:
        # The torrent's URL normalised once, then our own encoding appended and sent verbatim.
        full = URL(build_announce_url(str(URL(url)), request), encoded=True)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self.http.get(full, timeout=timeout, allow_redirects=False) as reply:
            if reply.status != 200:
                raise TrackerRefused(f"HTTP {reply.status} {reply.reason or ''}".rstrip())
            body = await read_capped(reply.content, MAX_RESPONSE_BYTES)
            if body is None:
                raise TrackerRefused(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        return parse_announce_response(body)

    async def run(self) -> None:
        """Announce until cancelled; call ``stop()`` for the final ``stopped``."""
        self._wake = asyncio.Event()
        while True:
            delay = await self._announce_step()
            self._wake.clear()
            await wait_event(self._wake, delay)
            if self.torrent.state is TorrentState.STOPPED:
                return

    def start(self) -> None:
        """Announce now and then on the tracker's schedule, until ``close()``, with no task
        between announces."""
        self._announce_soon()

    async def close(self) -> None:
        """End what ``start()`` began (then ``stop()`` says ``stopped``)."""
        self._cancel_timer()
        if self._task is not None:
            await stop_tasks([self._task], owner=self.torrent.info.name)
            self._task = None

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timetable is not None:
            self._timetable.cancel(self._timer)
        self._timer = None

    def _announce_soon(self) -> None:
        self._timer = None
        self._task = asyncio.ensure_future(self._announce_then_schedule())

    async def _announce_then_schedule(self) -> None:
        delay = await self._announce_step()
        self._task = None
        if self._again:
            self._again, delay = False, 0.0
        if self.torrent.state is not TorrentState.STOPPED:
            if self._timetable is None:
                self._timetable = Timetable()
            self._timer = self._timetable.call_later(delay, self._announce_soon)

    async def _announce_step(self) -> float:
        """One announce with its pending event; the seconds until the next one."""
        event, self._pending_event = self._pending_event, ""
        try:
            response = await self.announce(event)
        except AnnounceFailed as exc:
            self._failures += 1
            delay = float(min(MAX_BACKOFF, MIN_BACKOFF * 2.0 ** min(self._failures - 1, 32)))
            if exc.retry_in:
                delay = max(delay, float(exc.retry_in))
            if event:
                self._pending_event = event  # say it again next time
            self._note_failure(exc, delay)
        else:
            self._failures = 0
            if self.status.last_error is not None:
                log.warning("%s: tracker answered again", self.torrent.info.name)
            self.status.last_success = time.time()
            self.status.last_error = response.warning
            self.status.refused = False
            self._set_problem(None)
            self.status.peers_received += len(response.peers)
            self.status.complete = response.complete
            self.status.incomplete = response.incomplete
            self.torrent.tracker_answered = True
            if response.site_networks and self.on_site_networks is not None:
                self.on_site_networks(response.site_networks)  # before its peers are dialled
            self.torrent.add_peer_addresses(response.peers)
            delay = float(max(response.interval, response.min_interval or 0, 5))
        self.status.next_announce = time.time() + delay
        return delay

    def _note_failure(self, exc: AnnounceFailed, delay: float) -> None:
        """Record the failure; log it as a warning only when it differs from the last one."""
        text = str(exc)
        level = logging.DEBUG if text == self.status.last_error else logging.WARNING
        if isinstance(exc, TrackerRefused) and exc.not_published:
            problem, what = Problem.NOT_PUBLISHED, "not published: the site server no longer tracks this package"
        elif exc.refused:
            problem, what = Problem.TRACKER_REFUSED, "tracker refused the announce"
        else:
            problem, what = Problem.TRACKER_UNREACHABLE, "tracker unreachable"
        log.log(level, "%s: %s (retrying in %.0f s): %s", self.torrent.info.name, what, delay, text)
        self.status.last_error = text
        self.status.refused = exc.refused
        self._set_problem(problem)

    def _set_problem(self, problem: Problem | None) -> None:
        if problem != self.status.problem:
            self.status.problem = problem
            if self.on_problem is not None:
                self.on_problem()

    async def stop(self, timeout: float = 5.0) -> None:
        """Tell the trackers we leave (best effort, bounded in time)."""
        if self.status.last_success is None or timeout <= 0:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.announce("stopped")
        except (AnnounceFailed, TimeoutError):
            pass


def _reason(exc: BaseException) -> str:
    """One line for a network fault; a bare timeout has no text of its own."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return one_line(str(exc)) or type(exc).__name__
