"""HTTP web seeds (BEP 19): fetch pieces from the distribution point with range requests.

The distribution point is the one source every client can reach, and the one behind the WAN
link. So the web seed is the source of last resort: it joins the picker as a peer that has
every piece, waits a grace period (so peers of the branch get the first word; it ends early
once the tracker's peers are connected and have said what they have), and then takes
only pieces that ``allowed`` accepts: by default pieces no connected peer has, which are also not
being fetched from a peer (the picker never hands out a requested block outside endgame, and the
web seed never joins the endgame). PCs that download at the same time also take turns: with k
downloading PCs connected, piece i is the web-seed job of the PC whose peer id is (i mod k)-th in
sorted order, so the PCs of a branch split the missing pieces without a message; a PC whose
share is done helps with the rest. A branch therefore pulls each piece over the WAN about once;
the branch-office benchmark measures how close to once. Before fetching a piece a PC claims it
with a ``p2pdist_fetching`` message (p2pdist/wire/fetching.py), and a piece a peer claimed is
not fetched again meanwhile: that closes the race turn-taking leaves while PCs still disagree
on who is in the branch, and lets a PC whose share is done help without doubling a fetch.

Blocks go into the torrent through the same assembly and verification path as peer blocks, so a
modified file on the distribution point is caught by the piece hashes like any bad peer.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from p2pdist.aio import stop_tasks
from p2pdist.errors import RemoteError
from p2pdist.httpio import read_capped
from p2pdist.engine.torrent import Torrent, TorrentState
from p2pdist.metainfo import Layout, Metainfo
from p2pdist.outcomes import Problem
from p2pdist.piece_picker.picker import Block

log = logging.getLogger("p2pdist.webseed")

MAX_BACKOFF = 120.0
SETTLE_MARGIN = 0.2  # seconds: a few LAN round trips, for claims to follow the handshakes
HELP_PATIENCE = 2.0  # seconds with nothing to fetch before helping a PC that looks busy


class WebSeedError(RemoteError):
    """One fetch failed (HTTP status, short body, no Range support); the blocks go back to the
    picker. ``kind`` is the ``Problem`` an admin fixes."""

    def __init__(self, message: str, kind: Problem = Problem.WEBSEED_REFUSED) -> None:
        super().__init__(message)
        self.kind = kind


def file_urls(meta: Metainfo, base: str) -> list[str]:
    """The URL of each file of the torrent under web seed ``base``, the way BEP 19 builds them."""
    info = meta.info
    if not info.multi_file:
        return [base + quote(info.name) if base.endswith("/") else base]
    root = base if base.endswith("/") else base + "/"
    return [root + "/".join(quote(part) for part in entry.path) for entry in info.files]


class WebSeed:
    """Fetches pieces for one torrent from one HTTP base URL."""

    def __init__(
        self,
        torrent: Torrent,
        url: str,
        http: aiohttp.ClientSession,
        *,
        grace: float = 10.0,
        stall: float = 30.0,
        parallel: int = 4,
        timeout: float = 60.0,
        allowed: Callable[[int], bool] | None = None,
        rng: random.Random | None = None,
        on_problem: Callable[[], None] | None = None,
    ) -> None:
        """``on_problem`` is called when ``last_kind`` changes (a fetch fails, or works again)."""
        self.torrent = torrent
        self.on_problem = on_problem
        self.url = url
        self.http = http
        self.grace = grace
        self.stall = stall
        self._stalled = False
        self.parallel = parallel
        self.timeout = timeout
        self._custom_allowed = allowed
        self._rng = rng or random.Random()
        self._layout: Layout = torrent.layout
        self._urls = file_urls(torrent.meta, url)
        self.bytes_downloaded = 0
        self.last_error: str | None = None
        self.last_kind: Problem | None = None
        self._failures = 0
        self._ids: list[bytes] = [torrent.peer_id]  # PCs sharing the web-seed work, by peer id
        self._turn = 0  # this PC's place in _ids
        self._last_pick = 0.0  # loop time a worker last found something to fetch

    def __repr__(self) -> str:
        return f"<WebSeed {self.url}>"

    def allowed(self, index: int) -> bool:
        """Locality rule: only pieces that no connected peer has (this seed counts as one) and
        that no connected peer is fetching from the web seed right now (its claim).

        If peers have pieces but give us nothing for ``stall`` seconds (they choke us, or are
        gone), every piece is allowed: the package must arrive even from a stingy branch.
        """
        picker = self.torrent.picker
        assert picker is not None
        if not self._stalled and (picker.availability(index) > 1 or self.torrent.claimed_elsewhere(index)):
            return False
        return self._custom_allowed is None or self._custom_allowed(index)

    def _refresh_turns(self) -> None:
        """Take turns with the connected peers that also download: piece i is PC (i mod k)'s job.

        Every PC sorts the same peer ids, so without any message the PCs of a branch split the
        pieces nobody has into disjoint shares, instead of racing each other for the same ones.
        """
        torrent = self.torrent
        ids = [torrent.peer_id]
        for conn in torrent.peers:
            handshake = conn.wire.peer_handshake
            if handshake is not None and not conn.is_seed and not conn.closed:
                ids.append(handshake.peer_id)
        ids.sort()
        self._ids, self._turn = ids, ids.index(torrent.peer_id)

    def mine(self, index: int) -> bool:
        k, turn = len(self._ids), self._turn
        return (k <= 1 or index % k == turn) and self.allowed(index)

    def _mine_left(self) -> bool:
        picker = self.torrent.picker
        assert picker is not None
        k, turn = len(self._ids), self._turn
        have = picker.have
        return any(
            not have[i] and picker.availability(i) <= 1 and not self.torrent.claimed_elsewhere(i)
            for i in range(turn, self.torrent.info.num_pieces, max(1, k))
        )

    def _helping_rule(self) -> Callable[[int], bool]:
        """Which pieces of other PCs' shares to help with once ours is done: only those of PCs
        that are not fetching from the web seed right now (no live claim), since a PC busy
        with its share picks its next piece at any moment, and helping it then would race it
        for the same piece. When peers are stalled, every allowed piece."""
        if self._stalled:
            return self.allowed
        busy = self.torrent.web_fetchers()
        k, ids = len(self._ids), self._ids
        return lambda index: ids[index % k] not in busy and self.allowed(index)

    async def _watch_peers(self) -> None:
        """Set ``_stalled`` while peers deliver nothing for ``stall`` seconds."""
        last = self.torrent.bytes_from_peers
        quiet_since = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(1.0)
            now = asyncio.get_running_loop().time()
            self._refresh_turns()
            current = self.torrent.bytes_from_peers
            if current != last:
                last, quiet_since = current, now
            self._stalled = now - quiet_since >= self.stall

    async def run(self) -> None:
        torrent = self.torrent
        while torrent.picker is None:
            await asyncio.sleep(0.1)
        picker = torrent.picker
        if torrent.completed.is_set():
            return
        picker.add_peer(self, has_all=True)
        workers: list[asyncio.Task[Any]] = []
        try:
            await self._grace_period()
            self._refresh_turns()
            self._last_pick = asyncio.get_running_loop().time()
            workers = [asyncio.ensure_future(self._worker()) for _ in range(self.parallel)]
            workers.append(asyncio.ensure_future(self._watch_peers()))
            workers.append(asyncio.ensure_future(torrent.completed.wait()))
            workers.append(asyncio.ensure_future(torrent.stopped.wait()))
            await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop_tasks(workers, owner=torrent.info.name)
            if torrent.picker is not None:
                torrent.picker.remove_peer(self)

    async def _grace_period(self) -> None:
        """Up to ``grace`` seconds for the peers to speak first, over as soon as the tracker
        answered and every peer it named is connected and described (or failed): waiting
        longer only delays the pieces nobody in the branch has. A short margin lets the peers'
        claims, sent when they read our extension handshake, arrive too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        while loop.time() < deadline:
            if self.torrent.peers_settled():
                await asyncio.sleep(min(SETTLE_MARGIN, max(0.0, deadline - loop.time())))
                return
            await asyncio.sleep(0.05)

    async def _worker(self) -> None:
        torrent = self.torrent
        picker = torrent.picker
        assert picker is not None
        loop = asyncio.get_running_loop()
        while torrent.state is TorrentState.DOWNLOADING:
            blocks = picker.pick(self, self._blocks_per_piece(), allowed=self.mine)
            if not blocks and (self._stalled or not self._mine_left()):
                blocks = picker.pick(self, self._blocks_per_piece(), allowed=self._helping_rule())
                if not blocks and loop.time() - self._last_pick > HELP_PATIENCE:
                    # PCs that disagree on who is in the branch can each think a piece is
                    # another's job: after a short wait, any piece nobody has or claims.
                    blocks = picker.pick(self, self._blocks_per_piece(), allowed=self.allowed)
            if blocks:
                self._last_pick = loop.time()
            if not blocks:
                await asyncio.sleep(0.5)  # peers have the rest, or will soon; look again
                continue
            for index in sorted({block.index for block in blocks}):
                torrent.claim_web_piece(index)
            try:
                await self._fetch(blocks)
            except (WebSeedError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                for block in blocks:
                    picker.block_lost(self, block)
                self._failures += 1
                self.last_error = str(exc) or type(exc).__name__
                self._set_kind(exc.kind if isinstance(exc, WebSeedError) else Problem.WEBSEED_UNREACHABLE)
                delay = min(MAX_BACKOFF, 2.0**self._failures) * (0.5 + self._rng.random())
                log.warning("%s: web seed %s failed (%s); retrying in %.0f s", torrent.info.name, self.url, self.last_error, delay)
                await asyncio.sleep(delay)
            else:
                self._failures = 0
                self.last_error = None
                self._set_kind(None)

    def _set_kind(self, kind: Problem | None) -> None:
        if kind != self.last_kind:
            self.last_kind = kind
            if self.on_problem is not None:
                self.on_problem()

    def _blocks_per_piece(self) -> int:
        return self._layout.blocks_in_piece(0)

    async def _fetch(self, blocks: list[Block]) -> None:
        """Fetch ``blocks`` as contiguous runs, one HTTP range per run and file."""
        blocks = sorted(blocks, key=lambda b: (b.index, b.begin))
        run: list[Block] = [blocks[0]]
        for block in blocks[1:]:
            if block.index == run[-1].index and block.begin == run[-1].begin + run[-1].length:
                run.append(block)
            else:
                await self._fetch_run(run)
                run = [block]
        await self._fetch_run(run)

    async def _fetch_run(self, run: list[Block]) -> None:
        index = run[0].index
        start = self._layout.piece_offset(index) + run[0].begin
        length = run[-1].begin + run[-1].length - run[0].begin
        parts = []
        for span in self._layout.spans(start, length):
            entry = self._layout.files[span.file_index]
            if entry.pad:
                parts.append(bytes(span.length))
            else:
                parts.append(await self._get_range(self._urls[span.file_index], span.file_offset, span.length, entry.length))
        data = b"".join(parts)
        self.bytes_downloaded += len(data)
        offset = 0
        for block in run:
            self.torrent.deliver_webseed_block(self, block.index, block.begin, data[offset : offset + block.length])
            offset += block.length

    async def _get_range(self, url: str, offset: int, length: int, file_length: int) -> bytes:
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self.http.get(url, headers=headers, timeout=timeout, allow_redirects=True) as reply:
            if reply.status == 206:
                body = await read_capped(reply.content, length)
                if body is None or len(body) != length:
                    raise WebSeedError(f"{url}: range answer of {0 if body is None else len(body)} bytes, expected {length}")
                return body
            if reply.status == 200:
                # No range support: accept only a whole file that is exactly what we asked for.
                if offset == 0 and length == file_length:
                    body = await read_capped(reply.content, length)
                    if body is not None and len(body) == length:
                        return body
                raise WebSeedError(f"{url}: the web server ignores range requests (answered 200, not 206)", Problem.RANGE_UNSUPPORTED)
            raise WebSeedError(f"{url}: HTTP {reply.status}")
