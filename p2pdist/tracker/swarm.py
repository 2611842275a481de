"""The tracker's logic as a plain class: an announce in, a response out; no HTTP anywhere.

Who meets whom is the whole point of a site-aware tracker. A peer is registered in its site's
part of the swarm and is only ever given peers of that same site, in this order:

1. its own location (branch office), same subnet first: these cost no WAN at all;
2. the rest of its site;
3. the site's configured seeds (e.g. the distribution point running an agent).

Each group is shuffled (an injected rng) so load spreads over the peers of a group. A seeder is
given only leechers: seeders have nothing to say to each other. An address in no configured
site (and no default site) is neither registered nor given peers. Torrents not published in the
repository (or retired) are refused: this is a private tracker.

The aiohttp handlers (``web.py``) only parse, call and render, so every rule here is tested
without sockets; the store (memory or Redis) is passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from p2pdist.errors import RemoteError
from p2pdist.tracker.announce import AnnounceRequest, AnnounceResponse, ScrapeResponse, ScrapeStats
from p2pdist.tracker.settings import TrackerSettings
from p2pdist.tracker.sites import Place
from p2pdist.tracker.store import PeerLimitError, PeerRecord, PeerStore

NOT_REGISTERED = "torrent is not published in this site's repository"
NO_SITE_WARNING = "your address is in no configured site; no peers are offered"


class TrackerRefusal(RemoteError):
    """The tracker will not serve this announce; the reason goes back as ``failure reason``."""

    def __init__(self, reason: str, retry_in: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_in = retry_in


class Tracker:
    def __init__(
        self,
        store: PeerStore,
        settings: TrackerSettings,
        is_tracked: Callable[[bytes], bool],
        seeds: dict[str, tuple[tuple[str, int], ...]] | None = None,
        per_address: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.is_tracked = is_tracked
        self.seeds = seeds or {}
        self.per_address = per_address
        self.rng = rng or random.Random()

    def numwant(self, request: AnnounceRequest) -> int:
        wanted = self.settings.numwant_default if request.numwant is None else request.numwant
        return min(wanted, self.settings.numwant_max)

    async def announce(self, request: AnnounceRequest, place: Place, now: float) -> AnnounceResponse:
        if not self.is_tracked(request.info_hash):
            raise TrackerRefusal(NOT_REGISTERED)
        interval, min_interval = self.settings.interval, self.settings.min_interval
        if place.site is None:
            return AnnounceResponse(interval, min_interval, warning=NO_SITE_WARNING)
        seeder = request.left == 0
        record = PeerRecord(
            place.address,
            request.port,
            request.peer_id,
            seeder,
            place.location,
            place.subnet,
            now + self.settings.peer_expiry,
        )
        stopped = request.event == "stopped"
        try:
            peers = await self.store.announce(request.info_hash, place.site, record, stopped, now, self.per_address)
        except PeerLimitError as exc:
            raise TrackerRefusal(f"too many registrations from your address ({exc})") from None
        if request.event == "completed":
            await self.store.add_completed(request.info_hash, place.site)
        complete = incomplete = 0
        subnet: list[PeerRecord] = []
        location: list[PeerRecord] = []
        rest: list[PeerRecord] = []
        # One pass: count the live peers and sort the candidates into their groups.
        for peer in peers:
            if peer.expires <= now:
                continue
            if peer.seeder:
                complete += 1
                if seeder:
                    continue
            else:
                incomplete += 1
            if (peer.port == record.port and peer.ip == record.ip) or peer.peer_id == record.peer_id:
                continue
            if peer.location != record.location:
                rest.append(peer)
            elif peer.subnet == record.subnet:
                subnet.append(peer)
            else:
                location.append(peer)
        chosen: tuple[tuple[str, int], ...] = ()
        ids: tuple[bytes, ...] = ()
        if not stopped:
            chosen, ids = self.select((subnet, location, rest), record, place.site, self.numwant(request))
        return AnnounceResponse(interval, min_interval, chosen, complete, incomplete, peer_ids=ids)

    def select(
        self, groups: tuple[list[PeerRecord], ...], me: PeerRecord, site: str, numwant: int
    ) -> tuple[tuple[tuple[str, int], ...], tuple[bytes, ...]]:
        """Up to ``numwant`` peers, group after group (each shuffled), then the site's seeds."""
        chosen: list[tuple[str, int]] = []
        ids: list[bytes] = []
        for group in groups:
            room = numwant - len(chosen)
            if room <= 0:
                break
            picked = self.rng.sample(group, room) if len(group) > room else self.shuffled(group)
            chosen += [(p.ip, p.port) for p in picked]
            ids += [p.peer_id for p in picked]
        seeds = self.seeds.get(site)
        if seeds and not me.seeder and len(chosen) < numwant:
            taken = set(chosen)
            candidates = [s for s in seeds if s not in taken and s != (me.ip, me.port)]
            for seed in self.shuffled(candidates)[: numwant - len(chosen)]:
                chosen.append(seed)
                ids.append(b"")
        return tuple(chosen), tuple(ids)

    def shuffled(self, items: list) -> list:  # type: ignore[type-arg]
        if len(items) > 1:
            self.rng.shuffle(items)
        return items

    async def scrape(self, info_hashes: tuple[bytes, ...], place: Place, now: float) -> ScrapeResponse:
        """BEP 48 figures for the caller's own site; unpublished torrents are left out."""
        files: dict[bytes, ScrapeStats] = {}
        for info_hash in info_hashes:
            if not self.is_tracked(info_hash):
                continue
            counts = (await self.store.counts(info_hash, now)).get(place.site or "") if place.site else None
            files[info_hash] = (
                ScrapeStats(counts.seeders, counts.completed, counts.leechers) if counts else ScrapeStats()
            )
        return ScrapeResponse(files)
