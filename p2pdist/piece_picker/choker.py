"""The choker: which peers we upload to, as one pure function.

Theory of operation
-------------------
Every choke round (the agent's timer, typically each 10 s) the agent takes a snapshot of its
peers, calls ``decide`` with the time and its random generator, and applies the difference
between the returned unchoke set and the current one. ``decide`` keeps no hidden state: what it
must remember between rounds (the optimistic unchoke and since when) goes in and out as a
``ChokerState`` value, so a test replays any sequence of rounds exactly.

Only interested peers count: unchoking a peer that wants nothing wastes a slot. Seeds are never
unchoked (they want nothing from us either). ``preferred`` peers (same office, a LAN link) get
regular slots before anyone else: bytes between two PCs of a branch cost no WAN bandwidth,
which is the point of p2pdist.

Regular slots (``slots`` of them) are ranked by

* **downloading: tit-for-tat by download rate.** Peers that send us the most get our upload
  slots, so a peer's upload is what buys it our bandwidth (BEP 3's reciprocation). Snubbed peers
  (they sent us nothing for a long time) rank after every other peer whatever their old rate.
* **seeding: fastest upload first** (libtorrent's ``fastest_upload`` seed choking algorithm).
  When we only give, the rates we *upload* at are the signal: keeping the slots on the peers
  that take data fastest finishes the swarm soonest. Round robin (libtorrent's default,
  rotating slots by bytes given) is fairer to slow peers but on a LAN of equal PCs it mostly
  adds churn; the optimistic slot below already lets newcomers prove themselves.

Ties go to peers already unchoked (no churn for nothing), then to the random order drawn from
``rng``.

One **optimistic unchoke** slot on top of the regular ones goes to a random interested peer we
currently choke, and stays with it for ``optimistic_interval`` seconds (30 s, as in BEP 3's
original client) unless it leaves, loses interest or earns a regular slot. That is how a peer
with nothing to offer yet gets its first pieces, and how a faster partner is discovered.
``slots == 0`` disables uploading altogether, the optimistic slot included.

Left out on purpose: anti-snubbing's reduction of our request pipeline (the engine's business),
giving newly connected peers three times the optimistic chance (mainline), rate-based automatic
slot counts, and the "BitTyrant" style of unchoking by expected return; none pay off on a
corporate LAN where every peer runs the same agent.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from p2pdist.errors import LocalError


@dataclass(frozen=True)
class PeerStats:
    """One peer at one choke round, as the agent sees it."""

    peer: Hashable
    interested: bool  # it wants something we have
    choked: bool  # we currently choke it
    download_rate: float  # bytes/s we receive from it
    upload_rate: float  # bytes/s we send it
    is_seed: bool = False
    snubbed: bool = False
    preferred: bool = False  # same office (LAN): gets upload slots first


@dataclass(frozen=True)
class ChokerState:
    """What ``decide`` remembers between rounds."""

    optimistic: Hashable | None = None
    optimistic_since: float = float("-inf")


def _ranked(candidates: list[PeerStats], seeding: bool, rng: random.Random) -> list[PeerStats]:
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    if seeding:
        shuffled.sort(key=lambda p: (not p.preferred, -p.upload_rate, p.choked))
    else:
        shuffled.sort(key=lambda p: (not p.preferred, p.snubbed, -p.download_rate, p.choked))
    return shuffled


def decide(
    peers: Sequence[PeerStats],
    *,
    seeding: bool,
    slots: int,
    now: float,
    rng: random.Random,
    state: ChokerState,
    optimistic_interval: float = 30.0,
) -> tuple[frozenset[Hashable], ChokerState]:
    """The peers to unchoke this round (at most ``slots + 1``) and the state for the next one."""
    if slots < 0:
        raise LocalError(f"choker slots must be >= 0, got {slots}")
    if slots == 0:
        return frozenset(), ChokerState()
    candidates = [p for p in peers if p.interested and not p.is_seed]
    ranked = _ranked(candidates, seeding, rng)
    regular = ranked[:slots]
    rest = ranked[slots:]
    unchoke = {p.peer for p in regular}

    current = state.optimistic
    keep = (
        current is not None
        and now - state.optimistic_since < optimistic_interval
        and any(p.peer == current for p in rest)
    )
    if keep:
        unchoke.add(current)
        return frozenset(unchoke), state
    pool = [p for p in rest if p.choked and p.peer != current]
    if not pool:
        pool = [p for p in rest if p.peer != current]
    if not pool:
        pool = [p for p in rest]
    if not pool:
        return frozenset(unchoke), ChokerState()
    chosen = pool[int(rng.random() * len(pool))].peer
    unchoke.add(chosen)
    return frozenset(unchoke), ChokerState(chosen, now)
