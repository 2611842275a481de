"""The choker: a table of rounds with known answers, then properties over random swarms."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.errors import LocalError
from p2pdist.piece_picker import ChokerState, PeerStats, decide


def P(peer: str, down: float = 0.0, up: float = 0.0, **flags: bool) -> PeerStats:  # noqa: N802
    flags.setdefault("interested", True)
    flags.setdefault("choked", True)
    return PeerStats(peer=peer, download_rate=down, upload_rate=up, **flags)  # type: ignore[arg-type]


# (name, peers, seeding, slots, regular peers expected in the unchoke set)
TABLE = [
    ("tit for tat by download rate", [P("a", 10), P("b", 50), P("c", 30), P("d", 20)], False, 2, {"b", "c"}),
    ("uninterested peers never count", [P("a", 99, interested=False), P("b", 1), P("c", 2)], False, 2, {"b", "c"}),
    ("seeds are never unchoked", [P("s", 99, is_seed=True), P("b", 1), P("c", 2)], False, 2, {"b", "c"}),
    ("snubbed peers last", [P("a", 99, snubbed=True), P("b", 1), P("c", 2)], False, 2, {"b", "c"}),
    ("preferred (same office) first", [P("a", 99), P("b", 1, preferred=True), P("c", 2)], False, 2, {"a", "b"}),
    ("seeding ranks by upload rate", [P("a", 99, 1), P("b", 0, 50), P("c", 0, 30)], True, 2, {"b", "c"}),
    ("seeding: preferred first", [P("a", 0, 99), P("b", 0, 1, preferred=True), P("c", 0, 50)], True, 1, {"b"}),
    ("ties keep who is unchoked", [P("a", 5), P("b", 5, choked=False), P("c", 5)], False, 1, {"b"}),
    ("fewer peers than slots", [P("a", 1), P("b", 2)], False, 4, {"a", "b"}),
]


@pytest.mark.parametrize(("name", "peers", "seeding", "slots", "regular"), TABLE, ids=[t[0] for t in TABLE])
def test_table(name: str, peers: list[PeerStats], seeding: bool, slots: int, regular: set[str]) -> None:
    unchoke, state = decide(peers, seeding=seeding, slots=slots, now=100.0, rng=random.Random(1), state=ChokerState())
    eligible = {p.peer for p in peers if p.interested and not p.is_seed}
    extra = unchoke - regular
    assert regular <= unchoke
    assert len(extra) <= 1 and extra <= eligible
    if len(eligible) > len(regular):
        assert state.optimistic in extra and state.optimistic_since == 100.0
    else:
        assert state.optimistic is None and not extra


def test_slots_zero_disables_uploads_and_negative_is_an_error() -> None:
    peers = [P("a", 1), P("b", 2)]
    assert decide(peers, seeding=False, slots=0, now=0, rng=random.Random(0), state=ChokerState())[0] == frozenset()
    with pytest.raises(LocalError):
        decide(peers, seeding=False, slots=-1, now=0, rng=random.Random(0), state=ChokerState())


def test_optimistic_goes_to_a_choked_peer_and_is_kept_30s() -> None:
    peers = [P("top", 100, choked=False), P("x", 1), P("y", 2), P("z", 3, choked=False)]
    unchoke, state = decide(peers, seeding=False, slots=1, now=0.0, rng=random.Random(3), state=ChokerState())
    assert "top" in unchoke and state.optimistic in {"x", "y"}  # z is unchoked already
    first = state.optimistic
    unchoke2, state2 = decide(peers, seeding=False, slots=1, now=29.9, rng=random.Random(4), state=state)
    assert state2 == state and first in unchoke2
    _, state3 = decide(peers, seeding=False, slots=1, now=30.0, rng=random.Random(5), state=state)
    assert state3.optimistic != first and state3.optimistic_since == 30.0


def test_optimistic_replaced_at_once_when_it_leaves_or_earns_a_slot() -> None:
    peers = [P("a", 10), P("b", 1), P("c", 1)]
    _, state = decide(peers, seeding=False, slots=1, now=0.0, rng=random.Random(0), state=ChokerState())
    gone = [p for p in peers if p.peer != state.optimistic]
    _, after = decide(gone, seeding=False, slots=1, now=1.0, rng=random.Random(0), state=state)
    assert after.optimistic not in (state.optimistic, "a") and after.optimistic_since == 1.0
    promoted = [P(p.peer, 1000 if p.peer == state.optimistic else p.download_rate) for p in peers]
    unchoke, after = decide(promoted, seeding=False, slots=1, now=2.0, rng=random.Random(0), state=state)
    assert state.optimistic in unchoke and after.optimistic != state.optimistic


# -- properties ------------------------------------------------------------------------------

peer_lists = st.lists(
    st.builds(
        PeerStats,
        peer=st.integers(0, 30),
        interested=st.booleans(),
        choked=st.booleans(),
        download_rate=st.floats(0, 1e6),
        upload_rate=st.floats(0, 1e6),
        is_seed=st.booleans(),
        snubbed=st.booleans(),
        preferred=st.booleans(),
    ),
    max_size=25,
    unique_by=lambda p: p.peer,
)


@settings(max_examples=200, deadline=None)
@given(peers=peer_lists, seeding=st.booleans(), slots=st.integers(0, 6), seed=st.integers(0, 2**32))
def test_size_interest_and_determinism(peers: list[PeerStats], seeding: bool, slots: int, seed: int) -> None:
    args = {"seeding": seeding, "slots": slots, "now": 50.0, "state": ChokerState()}
    unchoke, state = decide(peers, rng=random.Random(seed), **args)  # type: ignore[arg-type]
    assert len(unchoke) <= slots + 1
    eligible = {p.peer for p in peers if p.interested and not p.is_seed}
    assert unchoke <= eligible
    assert len(unchoke) == min(len(eligible), slots + 1 if slots else 0)
    assert (unchoke, state) == decide(peers, rng=random.Random(seed), **args)  # type: ignore[arg-type]
    if state.optimistic is not None:
        assert state.optimistic in unchoke


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(3, 12),
    slots=st.integers(1, 3),
    seed=st.integers(0, 2**32),
    steps=st.lists(st.floats(0.5, 20.0), min_size=1, max_size=12),
)
def test_optimistic_rotates_after_interval_and_not_before(n: int, slots: int, seed: int, steps: list[float]) -> None:
    rng = random.Random(seed)
    rates = rng.sample(range(1, 1000), n)  # distinct rates: the regular slots never change
    unchoked: frozenset = frozenset()
    state, now = ChokerState(), 0.0
    for step in [0.0, *steps]:
        now += step
        peers = [P(f"p{k}", rates[k], choked=f"p{k}" not in unchoked) for k in range(n)]
        previous = state
        unchoked, state = decide(peers, seeding=False, slots=slots, now=now, rng=rng, state=previous)
        if previous.optimistic is None:
            continue
        if now - previous.optimistic_since < 30.0:
            assert state == previous and previous.optimistic in unchoked
        else:
            assert state.optimistic_since == now
            if n - slots >= 2:  # someone else to rotate to
                assert state.optimistic != previous.optimistic
