"""Finding who sent bad data: the culprit, not every peer that helped with a failed piece.

A piece that fails its hash check was usually built from blocks of several peers, most of them
honest. Banning them all (what a plain client does) would empty a branch office of sources
because one PC has a bad disk. Instead, like libtorrent's smart_ban plugin, ``SmartBan`` keeps a
digest of every block of a failed piece together with who sent it. When the piece later passes
its check, the good data is known block by block: any peer whose recorded block differs from it
sent bad data, and only that peer is a culprit. The digest is the caller's choice (any
collision-resistant hash, e.g. SHA-1 of the block; the same function both times).

``Strikes`` is the small policy on top: a proven culprit is banned at once; a peer that sent at
least half the blocks of ``failures_to_ban`` (2) failed pieces is banned too, which covers the
case where no good copy ever arrives to prove anything. Both are keyed by whatever the caller
names a peer with; the engine uses the IP address, so that evidence, strikes and bans survive a
reconnect (a poisoner that redials after every bad piece is still one peer).

Memory is bounded: digests are kept only for pieces being downloaded (cleared when verified or
failed) and for failed pieces (cleared when verified), at most ``max_failed_pieces`` of them and
``max_attempts`` failed attempts each; the oldest go first. Both classes are pure: no clock, no
I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping

# begin -> {peer: digest}
_Attempt = dict[int, dict[Hashable, bytes]]


class SmartBan:
    """Per-block digests of pieces in flight and of failed pieces; culprits once a piece passes."""

    def __init__(self, *, max_failed_pieces: int = 1024, max_attempts: int = 4) -> None:
        self._current: dict[int, _Attempt] = {}
        self._failed: OrderedDict[int, list[_Attempt]] = OrderedDict()
        self._max_failed = max_failed_pieces
        self._max_attempts = max_attempts

    def block_received(self, peer: Hashable, index: int, begin: int, digest: bytes) -> None:
        """Record the digest of a block as ``peer`` sent it."""
        self._current.setdefault(index, {}).setdefault(begin, {})[peer] = bytes(digest)

    def record_failed(self, index: int, blocks: Mapping[int, tuple[Hashable, bytes]]) -> None:
        """For engines that hash blocks only once a piece failed: begin -> (sender, digest)."""
        attempt: _Attempt = {begin: {peer: bytes(digest)} for begin, (peer, digest) in blocks.items()}
        self._current.pop(index, None)
        self._remember(index, attempt)

    def piece_failed(self, index: int) -> None:
        """Keep what was received for this piece as a failed attempt."""
        attempt = self._current.pop(index, None)
        if attempt:
            self._remember(index, attempt)

    def _remember(self, index: int, attempt: _Attempt) -> None:
        attempts = self._failed.pop(index, [])
        attempts.append(attempt)
        del attempts[: -self._max_attempts]
        self._failed[index] = attempts
        while len(self._failed) > self._max_failed:
            self._failed.popitem(last=False)

    def piece_verified(self, index: int, block_digests: Mapping[int, bytes]) -> set[Hashable]:
        """The piece passed; ``block_digests`` maps begin -> digest of the good data.

        Returns the peers whose block in an earlier failed attempt differs from the good one.
        """
        self._current.pop(index, None)
        culprits: set[Hashable] = set()
        for attempt in self._failed.pop(index, ()):
            for begin, senders in attempt.items():
                good = block_digests.get(begin)
                if good is None:
                    continue
                culprits.update(peer for peer, digest in senders.items() if digest != good)
        return culprits

    def forget_peer(self, peer: Hashable) -> None:
        """A departed peer: drop its records (a banned one can be proven guilty no further)."""
        attempts = list(self._current.values())
        for failed in self._failed.values():
            attempts.extend(failed)
        for attempt in attempts:
            for begin in [b for b, senders in attempt.items() if peer in senders]:
                del attempt[begin][peer]
                if not attempt[begin]:
                    del attempt[begin]
        for index in [i for i, attempt in self._current.items() if not attempt]:
            del self._current[index]
        for index in [i for i, failed in self._failed.items() if not any(failed)]:
            del self._failed[index]

    def tracked(self) -> tuple[int, int]:
        """(pieces in flight, failed pieces) with records: to check memory stays bounded."""
        return len(self._current), len(self._failed)


class Strikes:
    """Who to ban: a proven culprit at once, a main contributor of repeated failures later."""

    def __init__(self, *, failures_to_ban: int = 2, max_tracked: int = 65536) -> None:
        self._failures_to_ban = failures_to_ban
        self._max_tracked = max_tracked  # peers with strikes remembered; the oldest go first
        self._strikes: dict[Hashable, int] = {}
        self._banned: set[Hashable] = set()

    def piece_failed(self, contributed: Mapping[Hashable, int]) -> set[Hashable]:
        """A piece failed with {peer: blocks sent}; returns the peers banned by it.

        The failure counts against each peer that sent at least half of the piece's blocks
        (so a sole sender always); small contributors are left to smart ban's proof.
        """
        total = sum(contributed.values())
        newly: set[Hashable] = set()
        for peer, blocks in contributed.items():
            if blocks * 2 < total or peer in self._banned:
                continue
            strikes = self._strikes.pop(peer, 0) + 1
            self._strikes[peer] = strikes
            if len(self._strikes) > self._max_tracked:
                del self._strikes[next(iter(self._strikes))]
            if strikes >= self._failures_to_ban:
                self._banned.add(peer)
                newly.add(peer)
        return newly

    def culprits(self, peers: Iterable[Hashable]) -> set[Hashable]:
        """Peers proven to have sent bad data (from ``SmartBan.piece_verified``): banned now."""
        newly = {peer for peer in peers if peer not in self._banned}
        self._banned |= newly
        return newly

    def strikes(self, peer: Hashable) -> int:
        return self._strikes.get(peer, 0)

    def is_banned(self, peer: Hashable) -> bool:
        return peer in self._banned

    @property
    def banned(self) -> frozenset[Hashable]:
        return frozenset(self._banned)

    def forget_peer(self, peer: Hashable) -> None:
        """Forget a peer's strikes but not a ban: a banned address stays banned."""
        self._strikes.pop(peer, None)
