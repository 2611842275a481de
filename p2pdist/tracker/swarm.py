"""The tracker's logic as a plain class: an announce in, an answer out; no HTTP anywhere.

Who meets whom is the whole point of a site-aware tracker. A peer is registered in its site's
part of the swarm and is only ever given peers of that same site, in this order:

1. its own location (branch office), same subnet first: these cost no WAN at all;
2. the rest of its site;
3. the site's configured seeds (e.g. the distribution point running an agent).

Within each tier the order is random (an injected rng) so load spreads over its peers. The
store keeps a swarm grouped by (location, subnet) (see ``store``), so a tier is a handful of
groups and picking costs the peers handed out, not the size of the swarm: the tier is walked
from a random start with a random stride coprime to its size, a random permutation of it
that needs no list of the tier (each peer is equally likely to be picked; it is not a uniform
choice among all subsets, which load spreading does not need). A seeder is given only
leechers: seeders have nothing to say to each other. An address in no configured site (and no
default site) is neither registered nor given peers. Torrents not published in the repository
(or retired) are refused: this is a private tracker.

The HTTP layers (``service``, ``front``, ``web``) only parse, call and render, so every rule
here is tested without sockets; the store (memory or Redis) is passed in. With the memory
store ``announce_now`` answers without ever waiting, which is what lets the HTTP front answer
inside one callback.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable

from p2pdist.errors import RemoteError
from p2pdist.outcomes import Problem
from p2pdist.tracker.announce import (
    AnnounceRequest,
    AnnounceResponse,
    ScrapeResponse,
    ScrapeStats,
    encode_announce_response,
    encode_compact_body,
    site_networks_field,
)
from p2pdist.tracker.settings import TrackerSettings
from p2pdist.tracker.sites import Place
from p2pdist.tracker.store import (
    PEER_ID_LEN,
    TAIL_LEN,
    PeerGroup,
    PeerLimitError,
    PeerRecord,
    PeerStore,
    SiteCounts,
    SiteSwarm,
    pack_endpoint,
    unpack_endpoint,
)

NOT_REGISTERED = "torrent is not published in this site's repository"
NO_SITE_WARNING = "your address is in no configured site; no peers are offered"
_STRIDE_TRIES = 8


class TrackerRefusal(RemoteError):
    """The tracker will not serve this announce; the reason goes back as ``failure reason``."""

    def __init__(self, reason: str, retry_in: int | None = None, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_in = retry_in
        self.kind = kind  # a ``Problem`` word sent beside the reason


class Answer:
    """The tracker's reply to one announce.

    Peers are kept as chunks in tier order: (endpoint width, endpoints back to back, tails),
    where tails are ``store.TAIL_LEN`` bytes per peer starting with its peer id, or empty for
    configured seeds (no peer id). A whole group is one chunk, so the compact reply is a join.
    """

    __slots__ = ("interval", "min_interval", "complete", "incomplete", "warning", "chunks", "count", "site_networks", "networks_field")

    def __init__(
        self, interval: int, min_interval: int | None, complete: int = 0, incomplete: int = 0, warning: str | None = None
    ) -> None:
        self.interval = interval
        self.min_interval = min_interval
        self.complete = complete
        self.incomplete = incomplete
        self.warning = warning
        self.chunks: list[tuple[int, bytes, bytes]] = []
        self.count = 0  # peers in the chunks
        self.site_networks: tuple[str, ...] = ()
        self.networks_field = b""

    def add(self, width: int, endpoints: bytes, tails: bytes) -> None:
        self.chunks.append((width, endpoints, tails))
        self.count += len(endpoints) // width

    @property
    def endpoints(self) -> list[bytes]:
        return [e[i : i + w] for w, e, _ in self.chunks for i in range(0, len(e), w)]

    @property
    def peer_ids(self) -> list[bytes]:
        ids = []
        for width, endpoints, tails in self.chunks:
            for i in range(len(endpoints) // width):
                ids.append(tails[i * TAIL_LEN : i * TAIL_LEN + PEER_ID_LEN] if tails else b"")
        return ids

    @property
    def peers(self) -> tuple[tuple[str, int], ...]:
        return tuple(unpack_endpoint(endpoint) for endpoint in self.endpoints)

    def response(self) -> AnnounceResponse:
        return AnnounceResponse(
            self.interval, self.min_interval, self.peers, self.complete, self.incomplete, self.warning,
            tuple(self.peer_ids), self.site_networks,
        )  # fmt: skip

    def encode(self, compact: bool = True) -> bytes:
        """The bencoded reply; the compact form straight from the chunks, no generic bencoder."""
        if not compact:
            return encode_announce_response(self.response(), compact=False)
        chunks = self.chunks
        if len(chunks) == 1 and chunks[0][0] == 6:
            peers, peers6 = chunks[0][1], b""
        else:
            peers = b"".join([e for w, e, _ in chunks if w == 6])
            peers6 = b"".join([e for w, e, _ in chunks if w != 6])
        warning = self.warning.encode() if self.warning else None
        return encode_compact_body(
            self.interval, self.min_interval, self.complete, self.incomplete, peers, peers6, warning, self.networks_field
        )


class Tracker:
    def __init__(
        self,
        store: PeerStore,
        settings: TrackerSettings,
        is_tracked: Callable[[bytes], bool],
        seeds: dict[str, tuple[tuple[str, int], ...]] | None = None,
        per_address: int = 0,
        rng: random.Random | None = None,
        isolated_sites: frozenset[str] = frozenset(),
        networks: dict[tuple[str, str], tuple[str, ...]] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.is_tracked = is_tracked
        self.seeds = seeds or {}
        self.per_address = per_address
        self.isolated_sites = isolated_sites  # sites whose locations never meet each other
        # (site, location) -> the networks its agents may dial, as text and as the bencoded field
        self.networks = {key: (nets, site_networks_field(nets)) for key, nets in (networks or {}).items()}
        self.rng = rng or random.Random()
        self.synchronous = bool(getattr(store, "synchronous", False))
        self._seed_endpoints = {site: [pack_endpoint(ip, port) for ip, port in s] for site, s in self.seeds.items()}
        self._expiry = int(settings.peer_expiry)

    def numwant(self, request: AnnounceRequest) -> int:
        wanted = self.settings.numwant_default if request.numwant is None else request.numwant
        return min(wanted, self.settings.numwant_max)

    def _record(self, request: AnnounceRequest, place: Place, now: float) -> PeerRecord | Answer:
        """The registration to store, or the whole answer when there is nothing to store."""
        if not self.is_tracked(request.info_hash):
            raise TrackerRefusal(NOT_REGISTERED, kind=Problem.NOT_PUBLISHED)
        if place.site is None:
            return Answer(self.settings.interval, self.settings.min_interval, warning=NO_SITE_WARNING)
        endpoint = place.packed + request.port.to_bytes(2, "big")
        return PeerRecord(endpoint, request.peer_id, request.left == 0, place.group, int(now) + self._expiry)

    def announce_now(self, request: AnnounceRequest, place: Place, now: float) -> Answer:
        """``announce`` for a synchronous store (the memory store): no awaiting anywhere."""
        record = self._record(request, place, now)
        if isinstance(record, Answer):
            return record
        store = self.store
        try:
            swarm = store.announce_now(  # type: ignore[attr-defined]  # synchronous stores only (self.synchronous)
                request.info_hash, place.site, record, request.event == "stopped", now, self.per_address
            )
        except PeerLimitError as exc:
            raise TrackerRefusal(f"too many registrations from your address ({exc})") from None
        if request.event == "completed":
            store.add_completed_now(request.info_hash, place.site)  # type: ignore[attr-defined]  # as above
        return self._answer(swarm, record, request, place.site, now)  # type: ignore[arg-type]  # _record answered a place without a site

    async def announce(self, request: AnnounceRequest, place: Place, now: float) -> Answer:
        if self.synchronous:
            return self.announce_now(request, place, now)
        record = self._record(request, place, now)
        if isinstance(record, Answer):
            return record
        site: str = place.site  # type: ignore[assignment]  # _record answered a place without a site
        try:
            swarm = await self.store.announce(
                request.info_hash, site, record, request.event == "stopped", now, self.per_address
            )
        except PeerLimitError as exc:
            raise TrackerRefusal(f"too many registrations from your address ({exc})") from None
        if request.event == "completed":
            await self.store.add_completed(request.info_hash, site)
        return self._answer(swarm, record, request, site, now)

    def _answer(self, swarm: SiteSwarm, me: PeerRecord, request: AnnounceRequest, site: str, now: float) -> Answer:
        answer = Answer(self.settings.interval, self.settings.min_interval, swarm.seeders, swarm.leechers)
        networks = self.networks.get((site, me.group[0])) or self.networks.get((site, ""))
        if networks is not None:
            answer.site_networks, answer.networks_field = networks
        if request.event != "stopped":
            numwant = self.numwant(request)
            if numwant > 0:
                self.select(swarm, me, site, numwant, now, answer)
        return answer

    def select(self, swarm: SiteSwarm, me: PeerRecord, site: str, numwant: int, now: float, answer: Answer) -> None:
        """Up to ``numwant`` peers into ``answer``: tier after tier, then the site's seeds.

        Tiers: the asker's own subnet group, the rest of its location, and (except for sites that
        isolate their locations) the rest of the site.
        """
        mine = swarm.get(me.group)
        if mine is not None:
            self._pick((mine,), me, numwant, now, answer)
        if answer.count < numwant and len(swarm) > (mine is not None):
            location = me.group[0]
            near = [g for g in swarm.values() if g.location == location and g is not mine]
            if near:
                self._pick(near, me, numwant, now, answer)
            if answer.count < numwant and site not in self.isolated_sites:
                far = [g for g in swarm.values() if g.location != location]
                if far:
                    self._pick(far, me, numwant, now, answer)
        seeds = self._seed_endpoints.get(site)
        if seeds and not me.seeder and answer.count < numwant:
            taken = set(answer.endpoints)
            candidates = [s for s in seeds if s not in taken and s != me.endpoint]
            if len(candidates) > 1:
                self.rng.shuffle(candidates)
            for seed in candidates[: numwant - answer.count]:
                answer.add(len(seed), seed, b"")

    def _pick(self, groups: tuple[PeerGroup, ...] | list[PeerGroup], me: PeerRecord, numwant: int, now: float,
              answer: Answer) -> None:  # fmt: skip
        """Add peers of ``groups`` (one tier) in random order until ``numwant`` are chosen."""
        seeder = me.seeder
        total = 0
        for group in groups:
            total += len(group.leecher_tails) if seeder else len(group.seeder_tails) + len(group.leecher_tails)
        total //= TAIL_LEN
        if total > numwant - answer.count + 1:  # more than fit (the asker itself may be among them)
            self._take_some([(e, t, g) for g in groups for e, t in self._roles(g, seeder) if t], me, now, numwant, answer)
            return
        for group in groups:  # the whole tier fits
            if group.soonest <= now:  # someone here may have expired: look at each peer
                self._take_some([(e, t, group) for e, t in self._roles(group, seeder) if t], me, now, numwant, answer)
            else:
                self._take_all(group, not seeder, me, numwant, answer)

    @staticmethod
    def _roles(group: PeerGroup, seeder: bool) -> tuple[tuple[bytearray, bytearray], ...]:
        """The (endpoints, tails) runs of ``group`` an asker may be given: a seeder only leechers."""
        return (group.role(False),) if seeder else (group.role(True), group.role(False))

    def _take_all(self, group: PeerGroup, with_seeders: bool, me: PeerRecord, numwant: int, answer: Answer) -> None:
        """A whole group (none expired) as one chunk, rotated by a random amount: slices, no
        loop per peer."""
        if with_seeders:
            ends, ids = b"".join((group.seeders, group.leechers)), b"".join((group.seeder_tails, group.leecher_tails))
        else:
            ends, ids = bytes(group.leechers), bytes(group.leecher_tails)
        width = group.width
        at = ids.find(me.peer_id)  # the asker's own entry, or the same client at another endpoint
        while at >= 0:
            if at % TAIL_LEN == 0:
                index = at // TAIL_LEN
                ends = ends[: index * width] + ends[(index + 1) * width :]
                ids = ids[:at] + ids[at + TAIL_LEN :]
                at = ids.find(me.peer_id, at)
            else:
                at = ids.find(me.peer_id, at + 1)
        count = len(ids) // TAIL_LEN
        if count > 1:
            turn = int(self.rng.random() * count)
            if turn:
                ends = ends[turn * width :] + ends[: turn * width]
                ids = ids[turn * TAIL_LEN :] + ids[: turn * TAIL_LEN]
        room = numwant - answer.count
        if count > room:
            count = room
            ends, ids = ends[: room * width], ids[: room * TAIL_LEN]
        if count > 0:
            answer.chunks.append((width, ends, ids))
            answer.count += count

    def _take_some(self, parts: list[tuple[bytearray, bytearray, PeerGroup]], me: PeerRecord, now: float,
                   numwant: int, answer: Answer) -> None:  # fmt: skip
        """Peers one by one from a random start with a random stride coprime to their number: a
        random order of them all without building it; stops once ``numwant`` are chosen."""
        firsts = []  # index of each part's first peer when the parts are laid end to end
        total = 0
        for _, tails, _ in parts:
            firsts.append(total)
            total += len(tails) // TAIL_LEN
        if not total:
            return
        random_ = self.rng.random
        index = int(random_() * total)
        stride = 1
        if total > 2:
            for _ in range(_STRIDE_TRIES):
                candidate = 1 + int(random_() * (total - 1))
                if math.gcd(candidate, total) == 1:
                    stride = candidate
                    break
        my_id = me.peer_id
        for _ in range(total):
            part = bisect_right(firsts, index) - 1
            endpoints, tails, group = parts[part]
            local = index - firsts[part]
            index = (index + stride) % total
            tail = bytes(tails[local * TAIL_LEN : (local + 1) * TAIL_LEN])
            if tail.startswith(my_id) or int.from_bytes(tail[PEER_ID_LEN:], "big") <= now:
                continue
            width = group.width
            answer.add(width, bytes(endpoints[local * width : (local + 1) * width]), tail)
            if answer.count >= numwant:
                return

    def scrape_now(self, info_hashes: tuple[bytes, ...], place: Place, now: float) -> ScrapeResponse:
        """``scrape`` for a synchronous store."""
        return self._scrape(info_hashes, place, lambda h: self.store.counts_now(h, now))  # type: ignore[attr-defined]  # synchronous stores only

    async def scrape(self, info_hashes: tuple[bytes, ...], place: Place, now: float) -> ScrapeResponse:
        """BEP 48 figures for the caller's own site; unpublished torrents are left out."""
        if self.synchronous:
            return self.scrape_now(info_hashes, place, now)
        counts = {h: await self.store.counts(h, now) for h in info_hashes if self.is_tracked(h) and place.site}
        return self._scrape(info_hashes, place, counts.__getitem__)

    def _scrape(self, info_hashes: tuple[bytes, ...], place: Place,
                counts_of: Callable[[bytes], dict[str, SiteCounts]]) -> ScrapeResponse:  # fmt: skip
        files: dict[bytes, ScrapeStats] = {}
        for info_hash in info_hashes:
            if not self.is_tracked(info_hash):
                continue
            counts = counts_of(info_hash).get(place.site) if place.site else None
            files[info_hash] = (
                ScrapeStats(counts.seeders, counts.completed, counts.leechers) if counts else ScrapeStats()
            )
        return ScrapeResponse(files)
