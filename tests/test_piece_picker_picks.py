"""The piece picker: scenario tests in a tiny language, then a hypothesis state machine.

Scenario strings follow libtorrent's picker tests: ``"3102"`` is a torrent of four pieces held
by 3, 1, 0 and 2 peers; ``have="..*."`` marks pieces we already have. ``scenario`` builds peers
p0, p1, ... so that peer pk has piece i exactly when k < availability[i].
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from p2pdist.bitfield import Bitfield
from p2pdist.errors import ProtocolError
from p2pdist.metainfo import BLOCK_SIZE, FileEntry, Info, Layout
from p2pdist.piece_picker import FREE, RECEIVED, REQUESTED, Availability, Block, PickerError, PiecePicker
from p2pdist.piece_picker.availability import iter_bits

SEED = "seed"


def make_layout(num_pieces: int, blocks_per_piece: int = 4, last_bytes: int | None = None) -> Layout:
    piece_length = blocks_per_piece * BLOCK_SIZE
    last = piece_length if last_bytes is None else last_bytes
    total = piece_length * (num_pieces - 1) + last
    info = Info(
        name="pkg",
        piece_length=piece_length,
        piece_hashes=bytes(20 * num_pieces),
        files=(FileEntry(("pkg",), total, 0),),
        multi_file=False,
        private=True,
        package=None,
        total_length=total,
    )
    return Layout(info)


@dataclass
class Scenario:
    picker: PiecePicker
    peers: list[str] = field(default_factory=list)


def scenario(
    avail: str, have: str = "", *, blocks: int = 4, random_first: int = 0, seed: int = 0, **options: object
) -> Scenario:
    n = len(avail)
    counts = [int(ch) for ch in avail]
    have_bits = Bitfield(n, [i for i, ch in enumerate(have) if ch == "*"])
    picker = PiecePicker(
        make_layout(n, blocks),
        rng=random.Random(seed),
        have=have_bits,
        random_first=random_first,
        **options,  # type: ignore[arg-type]
    )
    peers = []
    for k in range(max(counts, default=0)):
        name = f"p{k}"
        picker.add_peer(name, Bitfield(n, [i for i, c in enumerate(counts) if c > k]))
        peers.append(name)
    return Scenario(picker, peers)


def pieces_of(blocks: list[Block]) -> list[int]:
    """Piece indices in first-seen order."""
    seen: list[int] = []
    for block in blocks:
        if block.index not in seen:
            seen.append(block.index)
    return seen


# -- ordering --------------------------------------------------------------------------------


def test_rarest_first_order() -> None:
    s = scenario("3102")
    s.picker.add_peer(SEED, has_all=True)
    order = [pieces_of(s.picker.pick(SEED, 4)) for _ in range(4)]
    assert order == [[2], [1], [3], [0]]
    assert s.picker.pick(SEED, 4) == []  # everything requested, one peer: no duplicates for it


def test_only_pieces_the_peer_has() -> None:
    s = scenario("3102")
    assert pieces_of(s.picker.pick("p2", 100)) == [0]
    assert pieces_of(s.picker.pick("p1", 100)) == [3]
    assert s.picker.pick("p1", 100) == []  # piece 1 is still free, but p1 lacks it: no endgame
    assert not s.picker.endgame


def test_pieces_we_have_are_never_picked() -> None:
    s = scenario("1111", have="*.*.")
    assert sorted(pieces_of(s.picker.pick("p0", 100))) == [1, 3]


def test_ties_are_broken_by_the_injected_rng() -> None:
    first = {pieces_of(scenario("11111111", seed=seed).picker.pick("p0", 4))[0] for seed in range(30)}
    assert len(first) > 3
    again = [pieces_of(scenario("11111111", seed=7).picker.pick("p0", 16)) for _ in range(2)]
    assert again[0] == again[1]


def test_blocks_of_a_piece_come_together_in_order() -> None:
    s = scenario("1", blocks=4)
    picked = s.picker.pick("p0", 4)
    assert [(b.index, b.begin, b.length) for b in picked] == [(0, i * BLOCK_SIZE, BLOCK_SIZE) for i in range(4)]


def test_last_piece_has_short_blocks() -> None:
    picker = PiecePicker(make_layout(2, 4, last_bytes=BLOCK_SIZE + 100), rng=random.Random(0), random_first=0)
    picker.add_peer("a", has_all=True)
    blocks = picker.pick("a", 10)
    assert sorted((b.index, b.begin, b.length) for b in blocks) == [
        (0, 0, BLOCK_SIZE), (0, BLOCK_SIZE, BLOCK_SIZE), (0, 2 * BLOCK_SIZE, BLOCK_SIZE),
        (0, 3 * BLOCK_SIZE, BLOCK_SIZE), (1, 0, BLOCK_SIZE), (1, BLOCK_SIZE, 100),
    ]  # fmt: skip


def test_started_pieces_come_before_rarer_fresh_ones() -> None:
    s = scenario("21", blocks=4)  # piece 1 is rarer, but p0 starts piece 0 first (p1 lacks 1)
    assert pieces_of(s.picker.pick("p1", 2)) == [0]
    assert [(b.index, b.begin // BLOCK_SIZE) for b in s.picker.pick("p0", 3)] == [(0, 2), (0, 3), (1, 0)]


def test_random_first_ignores_rarity_until_enough_pieces_are_verified() -> None:
    avail = "1" + "9" * 63
    firsts = {pieces_of(scenario(avail, seed=seed, random_first=4).picker.pick("p0", 4))[0] for seed in range(20)}
    assert firsts != {0}
    for seed in range(5):
        assert pieces_of(scenario(avail, seed=seed, random_first=0).picker.pick("p0", 4)) == [0]
    # Once random_first pieces are verified, rarest first again.
    s = scenario(avail, have=".****", random_first=4)
    assert pieces_of(s.picker.pick("p0", 4)) == [0]


def test_allowed_filters_piece_indices() -> None:
    s = scenario("1111")
    picked = s.picker.pick("p0", 100, allowed=lambda i: i % 2 == 1)
    assert sorted(pieces_of(picked)) == [1, 3]


def test_sparse_peer_gets_its_rarest_piece_without_walking_the_pool() -> None:
    n = 6000
    picker = PiecePicker(make_layout(n, 1), rng=random.Random(3), random_first=0)
    for k in range(5):
        picker.add_peer(f"full{k}", Bitfield(n, range(0, n, 1 + k)))
    picker.add_peer("few", Bitfield(n, [1, 2, 3, 5]))  # availabilities: 1 -> 2, 2 -> 3, 3 -> 3, 5 -> 2
    got = pieces_of(picker.pick("few", 2))
    assert sorted(got) == [1, 5]  # the two pieces with fewest holders among its four
    assert pieces_of(picker.pick("few", 10)) and picker.pick("few", 10) == []


def test_dirty_rebuild_after_bursts_keeps_rarest_first() -> None:
    n, rng = 3000, random.Random(11)
    picker = PiecePicker(make_layout(n, 1), rng=random.Random(5), random_first=0)
    bitfields = []
    for k in range(20):
        bits = Bitfield(n, [i for i in range(n) if rng.random() < 0.5])
        bitfields.append(bits)
        picker.add_peer(k, bits)
    for _ in range(300):
        picker.peer_has(rng.randrange(20), rng.randrange(n))
    picker.remove_peer(3)
    picker.add_peer(SEED, has_all=True)
    picked = pieces_of(picker.pick(SEED, 50))
    counts = [picker.availability(i) for i in picked]
    everyone = sorted(picker.availability(i) for i in range(n))
    assert counts == sorted(counts) and counts == everyone[:50]
    picker.check_invariants()


def test_availability_bulk_and_single_updates_match_a_recount() -> None:
    n, rng = 20_011, random.Random(4)
    avail = Availability(n, rng=random.Random(1), pool=range(0, n, 3))
    fields = [Bitfield(n, [i for i in range(n) if rng.random() < p]) for p in (0.9, 0.5, 0.01, 0.3)]
    for bits in fields:  # 18k and 10k set bits take the whole-array path, 200 the per-piece one
        avail.add_bits(bits.to_bytes(), bits.count)
    avail.remove_bits(fields[1].to_bytes(), fields[1].count)
    avail.add_seed()
    expected = [sum(bits[i] for k, bits in enumerate(fields) if k != 1) + 1 for i in range(n)]
    for _ in range(500):
        index = rng.randrange(n)
        avail.increment(index)
        expected[index] += 1
    assert [avail[i] for i in range(n)] == expected
    walked = list(avail.rarest())
    assert sorted(walked) == list(range(0, n, 3))
    keys = [avail[i] for i in walked]
    assert keys == sorted(keys)
    avail.check()
    assert list(iter_bits(fields[2].to_bytes())) == list(fields[2])


# -- block life ------------------------------------------------------------------------------


def test_never_the_same_block_twice_to_one_peer() -> None:
    s = scenario("22", blocks=2)
    first = s.picker.pick("p0", 4)
    assert len(first) == 4
    assert s.picker.endgame
    assert s.picker.pick("p0", 4) == []
    assert s.picker.requested_from("p0") == frozenset(first)


def test_endgame_duplicates_and_cancels() -> None:
    s = scenario("3", blocks=2, endgame_duplicates=2)
    a, b, c = s.peers
    assert not s.picker.endgame
    mine = s.picker.pick(a, 2)
    assert s.picker.endgame
    dup = s.picker.pick(b, 5)
    assert sorted(dup, key=lambda x: x.begin) == sorted(mine, key=lambda x: x.begin)
    assert s.picker.pick(c, 5) == []  # two requests per block is the limit
    done, cancels = s.picker.block_received(b, mine[0])
    assert (done, cancels) == (False, [(a, mine[0])])
    assert mine[0] not in s.picker.requested_from(a)
    done, cancels = s.picker.block_received(a, mine[1])
    assert done and cancels == [(b, mine[1])]
    assert s.picker.requested_from(a) == s.picker.requested_from(b) == frozenset()
    s.picker.piece_verified(0)
    assert s.picker.complete and not s.picker.endgame and s.picker.pick(c, 5) == []


def test_requested_only_by_one_peer_until_received_or_shared() -> None:
    s = scenario("3", blocks=2, endgame_duplicates=2)
    a, b, _ = s.peers
    first, second = sorted(s.picker.pick(a, 2), key=lambda block: block.begin)
    assert s.picker.requested_only_by(a, 0, first.begin) and not s.picker.requested_only_by(b, 0, first.begin)
    s.picker.block_received(a, first)
    assert not s.picker.requested_only_by(a, 0, first.begin)  # received: nobody may write it now
    assert s.picker.requested_only_by(a, 0, second.begin)
    s.picker.pick(b, 5)  # endgame: the second block is now asked of both
    assert not s.picker.requested_only_by(a, 0, second.begin) and not s.picker.requested_only_by(b, 0, second.begin)
    assert not s.picker.requested_only_by(a, 1, 0) and not s.picker.requested_only_by(a, 0, 1)


def test_endgame_threshold_starts_duplicates_early() -> None:
    s = scenario("22", blocks=2, endgame_threshold=4)
    s.picker.pick("p0", 1)
    assert s.picker.endgame  # 4 blocks still to come
    assert not scenario("22", blocks=2).picker.endgame


def test_unrequested_or_repeated_block_changes_nothing() -> None:
    s = scenario("1", blocks=2)
    stray = Block(0, 0, BLOCK_SIZE)
    assert s.picker.block_received("p0", stray) == (False, [])
    assert s.picker.block_state(stray) == FREE
    (block,) = s.picker.pick("p0", 1)
    assert s.picker.block_received("p0", Block(0, 1, BLOCK_SIZE)) == (False, [])  # misaligned
    assert s.picker.block_received("p0", block) == (False, [])
    assert s.picker.block_state(block) == RECEIVED
    assert s.picker.block_received("p0", block) == (False, [])
    assert s.picker.remaining_blocks == 1


def test_block_from_another_peer_than_asked_is_accepted_and_cancels_the_ask() -> None:
    s = scenario("2", blocks=1)
    (block,) = s.picker.pick("p0", 1)
    assert s.picker.block_received("p1", block) == (True, [("p0", block)])
    assert s.picker.piece_failed(0) == {"p1": 1}


def test_block_lost_returns_it_to_the_pool() -> None:
    s = scenario("2", blocks=2)
    picked = s.picker.pick("p0", 2)
    s.picker.block_lost("p0", picked[1])
    assert s.picker.block_state(picked[1]) == FREE
    assert s.picker.pick("p1", 1) == [picked[1]]
    s.picker.block_lost("p0", picked[1])  # not p0's any more: ignored
    assert s.picker.block_state(picked[1]) == REQUESTED


def test_lost_idle_piece_goes_back_to_the_pool() -> None:
    s = scenario("1", blocks=2)
    picked = s.picker.pick("p0", 2)
    for block in picked:
        s.picker.block_lost("p0", block)
    assert s.picker.started_pieces() == ()
    s.picker.check_invariants()


def test_remove_peer_releases_its_requests_and_availability() -> None:
    s = scenario("22", blocks=2)
    picked = s.picker.pick("p0", 3)
    assert s.picker.remove_peer("p0") == sorted(picked, key=lambda b: (b.index, b.begin))
    assert [s.picker.availability(i) for i in range(2)] == [1, 1]
    assert sorted(s.picker.pick("p1", 10), key=lambda b: (b.index, b.begin)) == sorted(
        [Block(i, j * BLOCK_SIZE, BLOCK_SIZE) for i in range(2) for j in range(2)], key=lambda b: (b.index, b.begin)
    )
    assert s.picker.remove_peer("p0") == []


def test_piece_failed_reports_contributors_and_frees_blocks() -> None:
    s = scenario("2", blocks=4)
    a = s.picker.pick("p0", 3)
    b = s.picker.pick("p1", 3)
    for block in a:
        s.picker.block_received("p0", block)
    done, _ = s.picker.block_received("p1", b[0])
    assert done
    assert s.picker.piece_failed(0) == {"p0": 3, "p1": 1}
    assert len(s.picker.pick("p1", 10)) == 4
    assert s.picker.remaining_blocks == 4
    assert s.picker.piece_failed(0) == {}  # nothing received since


def test_verification_updates_interest() -> None:
    s = scenario("21", blocks=1)
    assert s.picker.is_interesting("p1")
    (block,) = s.picker.pick("p1", 1)
    s.picker.block_received("p1", block)
    s.picker.piece_verified(0)
    assert not s.picker.is_interesting("p1") and s.picker.is_interesting("p0")
    assert s.picker.have[0] and s.picker.missing_count == 1 and not s.picker.complete


def test_seeds_are_a_counter() -> None:
    s = scenario("3102")
    for k in range(3):
        s.picker.add_peer(f"s{k}", has_all=True)
    s.picker.add_peer("full", Bitfield.full(4))  # a full bitfield is a seed too
    assert [s.picker.availability(i) for i in range(4)] == [7, 5, 4, 6]
    assert s.picker.peer_is_seed("full")
    s.picker.remove_peer("s0")
    assert s.picker.availability(2) == 3


def test_peer_completing_by_haves_becomes_a_seed() -> None:
    s = scenario("1100")
    s.picker.peer_has("p0", 2)
    s.picker.peer_has("p0", 2)  # duplicate HAVE counts once
    assert s.picker.availability(2) == 1
    s.picker.peer_has("p0", 3)
    assert s.picker.peer_is_seed("p0")
    assert [s.picker.availability(i) for i in range(4)] == [1, 1, 1, 1]
    s.picker.check_invariants()


def test_have_from_unknown_peer_adds_it() -> None:
    s = scenario("00")
    s.picker.peer_has("late", 1)
    assert s.picker.is_interesting("late") and s.picker.availability(1) == 1


def test_add_peer_again_replaces_its_bitfield() -> None:
    s = scenario("1")
    s.picker.add_peer("x")
    assert not s.picker.is_interesting("x")
    s.picker.add_peer("x", Bitfield(1, [0]))
    assert s.picker.availability(0) == 1 + 1


def test_bad_input_errors() -> None:
    s = scenario("11")
    with pytest.raises(ProtocolError):
        s.picker.peer_has("p0", 2)
    with pytest.raises(PickerError):
        s.picker.pick("nobody", 1)
    with pytest.raises(PickerError):
        s.picker.add_peer("p9", Bitfield(3))
    with pytest.raises(PickerError):
        s.picker.availability(-1)
    assert s.picker.pick("p0", 0) == []
    assert not s.picker.is_interesting("nobody") and s.picker.requested_from("nobody") == frozenset()


def test_whole_download_from_many_peers_completes() -> None:
    n, rng = 60, random.Random(2)
    picker = PiecePicker(make_layout(n, 3, last_bytes=5000), rng=random.Random(9))
    peers = [f"q{k}" for k in range(6)]
    for peer in peers:
        picker.add_peer(peer, Bitfield(n, [i for i in range(n) if rng.random() < 0.4]))
    picker.add_peer("webseed", has_all=True)
    for _ in range(2000):
        if picker.complete:
            break
        for peer in [*peers, "webseed"]:
            for block in picker.pick(peer, rng.randrange(1, 6), allowed=None):
                if rng.random() < 0.1:
                    picker.block_lost(peer, block)
                    continue
                done, _cancels = picker.block_received(peer, block)
                if done:
                    picker.piece_verified(block.index)
    assert picker.complete
    picker.check_invariants()


# -- state machine ---------------------------------------------------------------------------

PEERS = ("a", "b", "c", "d")


class PickerMachine(RuleBasedStateMachine):
    """Drive the picker with arbitrary event orders; a plain model says what must hold."""

    @initialize(
        n=st.integers(1, 9),
        blocks=st.integers(1, 3),
        last=st.integers(1, 3 * BLOCK_SIZE),
        have=st.sets(st.integers(0, 8)),
        random_first=st.integers(0, 3),
        threshold=st.integers(0, 3),
        duplicates=st.integers(1, 3),
        seed=st.integers(0, 2**16),
    )
    def setup(self, n, blocks, last, have, random_first, threshold, duplicates, seed) -> None:
        last = min(last, blocks * BLOCK_SIZE)
        self.layout = make_layout(n, blocks, last)
        self.n = n
        self.dups = duplicates
        self.threshold = threshold
        have = {i for i in have if i < n}
        self.picker = PiecePicker(
            self.layout,
            rng=random.Random(seed),
            have=Bitfield(n, have),
            random_first=random_first,
            endgame_threshold=threshold,
            endgame_duplicates=duplicates,
        )
        self.have = set(have)
        self.bits: dict[str, set[int] | None] = {}  # None: seed
        self.outstanding: dict[str, set[Block]] = {}
        self.requesters: dict[Block, set[str]] = {}
        self.senders: dict[Block, str] = {}  # received blocks of missing pieces

    # -- helpers --

    def blocks_of(self, index: int) -> list[Block]:
        size = self.layout.piece_size(index)
        return [Block(index, b, min(BLOCK_SIZE, size - b)) for b in range(0, size, BLOCK_SIZE)]

    def peer_has_piece(self, peer: str, index: int) -> bool:
        bits = self.bits[peer]
        return bits is None or index in bits

    def free_blocks(self) -> list[Block]:
        return [
            b
            for i in range(self.n)
            if i not in self.have
            for b in self.blocks_of(i)
            if b not in self.senders and not self.requesters.get(b)
        ]

    def model_endgame(self) -> bool:
        if len(self.have) == self.n:
            return False
        missing = [b for i in range(self.n) if i not in self.have for b in self.blocks_of(i)]
        remaining = sum(1 for b in missing if b not in self.senders)
        return not self.free_blocks() or remaining <= self.threshold

    def drop_request(self, peer: str, block: Block) -> None:
        self.outstanding[peer].discard(block)
        who = self.requesters.get(block)
        if who is not None:
            who.discard(peer)
            if not who:
                del self.requesters[block]

    # -- rules --

    @rule(peer=st.sampled_from(PEERS), pieces=st.sets(st.integers(0, 8)), has_all=st.booleans())
    def add_peer(self, peer, pieces, has_all) -> None:
        pieces = {i for i in pieces if i < self.n}
        if has_all:
            self.picker.add_peer(peer, has_all=True)
            self.bits[peer] = None
        else:
            self.picker.add_peer(peer, Bitfield(self.n, pieces))
            self.bits[peer] = None if len(pieces) == self.n else set(pieces)
        self.outstanding.setdefault(peer, set())

    @rule(peer=st.sampled_from(PEERS), index=st.integers(0, 8))
    def peer_has(self, peer, index) -> None:
        if index >= self.n:
            with pytest.raises(ProtocolError):
                self.picker.peer_has(peer, index)
            return
        self.picker.peer_has(peer, index)
        if peer not in self.bits:
            self.bits[peer] = set()
            self.outstanding[peer] = set()
        bits = self.bits[peer]
        if bits is not None:
            bits.add(index)
            if len(bits) == self.n:
                self.bits[peer] = None

    @precondition(lambda self: self.bits)
    @rule(data=st.data(), count=st.integers(1, 6), odd_only=st.booleans())
    def pick(self, data, count, odd_only) -> None:
        peer = data.draw(st.sampled_from(sorted(self.bits)))
        allowed = (lambda i: i % 2 == 1) if odd_only else None
        free_before = set(self.free_blocks())
        picked = self.picker.pick(peer, count, allowed=allowed)
        assert len(picked) <= count and len(set(picked)) == len(picked)
        seen_duplicate = False
        for block in picked:
            assert block.index not in self.have, "picked a piece we have"
            assert self.peer_has_piece(peer, block.index), "picked a piece the peer lacks"
            assert allowed is None or allowed(block.index)
            assert block not in self.outstanding[peer], "same block twice to one peer"
            assert block not in self.senders, "picked a received block"
            if block in free_before:
                assert not seen_duplicate, "free blocks must come before endgame duplicates"
            else:
                seen_duplicate = True
                assert self.requesters.get(block), "a non-free block must be requested elsewhere"
            self.outstanding[peer].add(block)
            self.requesters.setdefault(block, set()).add(peer)
            assert len(self.requesters[block]) <= max(self.dups, 1)
        if seen_duplicate:
            assert self.model_endgame()
        if len(picked) < count:

            def usable(b: Block) -> bool:
                return self.peer_has_piece(peer, b.index) and (allowed is None or allowed(b.index))

            assert not [b for b in self.free_blocks() if usable(b)], "free blocks left behind"
            if self.model_endgame():
                spare = [
                    b
                    for b, who in self.requesters.items()
                    if usable(b) and peer not in who and len(who) < self.dups
                ]
                assert not spare, "endgame duplicates left behind"

    @precondition(lambda self: any(self.outstanding.values()))
    @rule(data=st.data(), other_sender=st.booleans())
    def block_received(self, data, other_sender) -> None:
        asked = sorted(p for p, blocks in self.outstanding.items() if blocks)
        peer = data.draw(st.sampled_from(asked))
        block = data.draw(st.sampled_from(sorted(self.outstanding[peer], key=lambda b: (b.index, b.begin))))
        sender = data.draw(st.sampled_from(sorted(self.bits))) if other_sender else peer
        done, cancels = self.picker.block_received(sender, block)
        expected_cancels = self.requesters.pop(block) - {sender}
        assert sorted(cancels) == sorted((p, block) for p in expected_cancels)
        for p in list(self.outstanding):
            self.outstanding[p].discard(block)
        self.senders[block] = sender
        assert done == all(b in self.senders for b in self.blocks_of(block.index))

    @rule(peer=st.sampled_from(PEERS), index=st.integers(0, 8), begin=st.integers(0, 3))
    def stray_block(self, peer, index, begin) -> None:
        if index >= self.n:
            return
        block = Block(index, begin * BLOCK_SIZE, BLOCK_SIZE)
        if block in self.requesters:
            return
        assert self.picker.block_received(peer, block) == (False, [])

    @precondition(lambda self: any(self.outstanding.values()))
    @rule(data=st.data())
    def block_lost(self, data) -> None:
        peer = data.draw(st.sampled_from(sorted(p for p, blocks in self.outstanding.items() if blocks)))
        block = data.draw(st.sampled_from(sorted(self.outstanding[peer], key=lambda b: (b.index, b.begin))))
        self.picker.block_lost(peer, block)
        self.drop_request(peer, block)

    def complete_pieces(self) -> list[int]:
        return [
            i for i in range(self.n) if i not in self.have and all(b in self.senders for b in self.blocks_of(i))
        ]

    @precondition(lambda self: self.complete_pieces())
    @rule(data=st.data())
    def piece_verified(self, data) -> None:
        index = data.draw(st.sampled_from(self.complete_pieces()))
        self.picker.piece_verified(index)
        self.have.add(index)
        for block in self.blocks_of(index):
            self.senders.pop(block, None)

    @precondition(lambda self: any(b.index not in self.have for b in self.senders))
    @rule(data=st.data())
    def piece_failed(self, data) -> None:
        index = data.draw(st.sampled_from(sorted({b.index for b in self.senders})))
        expected: dict[str, int] = {}
        for block in self.blocks_of(index):
            sender = self.senders.pop(block, None)
            if sender is not None:
                expected[sender] = expected.get(sender, 0) + 1
        assert self.picker.piece_failed(index) == expected

    @precondition(lambda self: self.bits)
    @rule(data=st.data())
    def remove_peer(self, data) -> None:
        peer = data.draw(st.sampled_from(sorted(self.bits)))
        released = self.picker.remove_peer(peer)
        assert set(released) == self.outstanding[peer]
        for block in list(self.outstanding[peer]):
            self.drop_request(peer, block)
        del self.bits[peer], self.outstanding[peer]

    # -- invariants --

    @invariant()
    def ledger_matches_model(self) -> None:
        if not hasattr(self, "picker"):
            return
        self.picker.check_invariants()
        for i in range(self.n):
            brute = sum(1 for bits in self.bits.values() if bits is None or i in bits)
            assert self.picker.availability(i) == brute
        for peer, blocks in self.outstanding.items():
            assert self.picker.requested_from(peer) == blocks
            lacking = any(self.peer_has_piece(peer, i) for i in range(self.n) if i not in self.have)
            assert self.picker.is_interesting(peer) == lacking
        assert self.picker.endgame == self.model_endgame()
        assert self.picker.missing_count == self.n - len(self.have)
        # A block is a safe target for a scatter read exactly when one peer alone was asked.
        asked = [block for blocks in self.outstanding.values() for block in blocks]
        for peer in self.outstanding:
            for block in set(asked):
                alone = block in self.outstanding[peer] and asked.count(block) == 1
                assert self.picker.requested_only_by(peer, block.index, block.begin) == alone

    def teardown(self) -> None:
        """Completion is reachable from any state: a seed joins and everything arrives."""
        if not hasattr(self, "picker"):
            return
        picker = self.picker
        picker.add_peer("final-seed", has_all=True)
        for _ in range(4 * self.n * 3 + 10):
            if picker.complete:
                break
            for peer in [p for p in picker.peers if picker.requested_from(p)]:
                for block in picker.requested_from(peer):
                    picker.block_received(peer, block)
            for block in picker.pick("final-seed", 8):
                done, _ = picker.block_received("final-seed", block)
            for index in range(self.n):
                if not picker.has(index) and index in picker.started_pieces():
                    states = [picker.block_state(b) for b in self.blocks_of(index)]
                    if all(s == RECEIVED for s in states):
                        picker.piece_verified(index)
        assert picker.complete
        picker.check_invariants()


PickerMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestPickerMachine = PickerMachine.TestCase


def _assert_same_ledger(picker: PiecePicker, reference: PiecePicker) -> None:
    """Both consistent, and alike in what is left, who was asked ("a", "b") and who sent what."""
    for each in (picker, reference):
        each.check_invariants()
    assert picker.remaining_blocks == reference.remaining_blocks
    assert picker.requested_from("a") == reference.requested_from("a")
    assert picker.requested_from("b") == reference.requested_from("b")
    assert [picker.senders(i) for i in range(6)] == [reference.senders(i) for i in range(6)]


def _normalized(answer: object) -> object:
    return None if answer is None else (answer[0], list(answer[1]))  # type: ignore[index]


@st.composite
def _runs(draw: st.DrawFn) -> tuple[int, list[int], list[tuple[int, int, int]]]:
    seed = draw(st.integers(min_value=0, max_value=1000))
    wants = draw(st.lists(st.integers(min_value=0, max_value=30), min_size=2, max_size=2))
    run = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=5),
                st.integers(min_value=0, max_value=4).map(lambda n: n * BLOCK_SIZE) | st.integers(min_value=0, max_value=5 * BLOCK_SIZE),
                st.sampled_from([BLOCK_SIZE, BLOCK_SIZE, 100, 7]),
            ),
            max_size=40,
        )
    )
    return seed, wants, run


@settings(max_examples=80, deadline=None)
@given(case=_runs())
def test_take_blocks_answers_as_take_block_one_by_one(case: tuple[int, list[int], list[tuple[int, int, int]]]) -> None:
    """Same answers and same ledger, whatever mix of requested, duplicate, unrequested,
    misaligned and wrong-length blocks a run holds, including endgame duplicates."""
    seed, wants, run = case

    def prepared() -> PiecePicker:
        picker = PiecePicker(make_layout(6, 4, last_bytes=BLOCK_SIZE + 7), rng=random.Random(seed), endgame_threshold=8)
        picker.add_peer("a", has_all=True)
        picker.add_peer("b", has_all=True)
        picker.pick("a", wants[0])
        picker.pick("b", wants[1])
        return picker

    one_by_one, batched = prepared(), prepared()
    blocks = [(index, begin, bytes(length)) for index, begin, length in run]
    expected = [_normalized(one_by_one.take_block("a", index, begin, len(data))) for index, begin, data in blocks]
    assert [_normalized(answer) for answer in batched.take_blocks("a", blocks)] == expected
    _assert_same_ledger(batched, one_by_one)


@st.composite
def _placed_runs(draw: st.DrawFn) -> tuple[int, list[int], list[int], list[tuple[int, int, int]]]:
    """What a driver may hand to ``take_sole_run``: mostly the blocks asked of "a", in order,
    sometimes cut, reordered, duplicated or mixed with blocks nobody asked for."""
    seed = draw(st.integers(min_value=0, max_value=1000))
    wants = draw(st.lists(st.integers(min_value=0, max_value=30), min_size=2, max_size=2))
    cut = draw(st.lists(st.integers(min_value=0, max_value=40), min_size=2, max_size=2))
    extra = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=5),
                st.integers(min_value=0, max_value=4).map(lambda n: n * BLOCK_SIZE),
                st.sampled_from([BLOCK_SIZE, BLOCK_SIZE + 0, 7]),
            ),
            max_size=3,
        )
    )
    return seed, wants, cut, extra


@settings(max_examples=120, deadline=None)
@given(case=_placed_runs(), data=st.data())
def test_take_sole_run_answers_as_take_blocks(case: tuple[int, list[int], list[int], list[tuple[int, int, int]]], data: st.DataObject) -> None:
    """The bulk settlement of blocks read in place gives the same answers and the same ledger
    as ``take_blocks``, for runs of sole requests and for anything else mixed in."""
    seed, wants, cut, extra = case

    def prepared() -> tuple[PiecePicker, list[Block]]:
        picker = PiecePicker(make_layout(6, 4, last_bytes=BLOCK_SIZE + 7), rng=random.Random(seed), endgame_threshold=8)
        picker.add_peer("a", has_all=True)
        picker.add_peer("b", has_all=True)
        asked = picker.pick("a", wants[0])
        picker.pick("b", wants[1])
        return picker, asked

    one_by_one, asked = prepared()
    bulk, _ = prepared()
    keys = [(block.index, block.begin, block.length) for block in asked]
    start, stop = sorted(cut)
    keys = keys[start:stop] if stop > start else keys
    if data.draw(st.booleans()) and len(keys) > 2:
        keys[0], keys[-1] = keys[-1], keys[0]
    if data.draw(st.booleans()) and keys:
        keys.append(keys[0])
    for position, key in zip(data.draw(st.lists(st.integers(min_value=0, max_value=40), max_size=len(extra), min_size=len(extra))), extra):
        keys.insert(min(position, len(keys)), key)
    expected = [_normalized(answer) for answer in one_by_one.take_blocks("a", [(i, b, bytes(n)) for i, b, n in keys])]
    assert [_normalized(answer) for answer in bulk.take_sole_run("a", keys)] == expected
    _assert_same_ledger(bulk, one_by_one)
    every_block = [block for i in range(6) for block in bulk_layout_blocks(i)]
    assert [bulk.block_state(block) for block in every_block] == [one_by_one.block_state(block) for block in every_block]


def bulk_layout_blocks(index: int) -> list[Block]:
    """The blocks of piece ``index`` of the six-piece layout the take tests use."""
    length = BLOCK_SIZE + 7 if index == 5 else 4 * BLOCK_SIZE
    return [Block(index, begin, min(BLOCK_SIZE, length - begin)) for begin in range(0, length, BLOCK_SIZE)]


@settings(max_examples=100, deadline=None)
@given(case=_runs(), limit=st.integers(min_value=0, max_value=60), data=st.data())
def test_sole_requests_counts_the_prefix_asked_of_the_peer_alone(
    case: tuple[int, list[int], list[tuple[int, int, int]]], limit: int, data: st.DataObject
) -> None:
    """The per-piece bulk check agrees with ``requested_only_by`` block by block (and with the
    block's own length), on runs of real requests with junk, duplicates and received blocks."""
    seed, wants, junk = case
    picker = PiecePicker(make_layout(6, 4, last_bytes=BLOCK_SIZE + 7), rng=random.Random(seed), endgame_threshold=8)
    picker.add_peer("a", has_all=True)
    picker.add_peer("b", has_all=True)
    asked = picker.pick("a", wants[0]) + picker.pick("a", 4)
    picker.pick("b", wants[1])
    for block in data.draw(st.lists(st.sampled_from(asked), max_size=3)) if asked else []:
        picker.take_block(data.draw(st.sampled_from(["a", "b"])), *block)
    run: list[tuple[int, int, int]] = [tuple(block) for block in asked]  # type: ignore[misc]
    for key in junk[: data.draw(st.integers(min_value=0, max_value=3))]:
        run.insert(data.draw(st.integers(min_value=0, max_value=len(run))), key)
    mine = picker.requested_from("a")
    expected = 0
    for index, begin, length in run[:limit]:
        if (index, begin, length) not in mine or not picker.requested_only_by("a", index, begin):
            break
        expected += 1
    assert picker.sole_requests("a", run, limit) == expected
    picker.check_invariants()


def test_a_complete_picker_holds_no_pool_order_even_with_peers() -> None:
    """A seed's pool is empty: the per-piece order and slots (~44 bytes a piece) are never made,
    not even when peers come and say what they have; a piece lost again makes them on demand."""
    n = 1000
    picker = PiecePicker(make_layout(n), rng=random.Random(3), have=Bitfield.full(n))
    avail = picker._avail
    assert avail._order is None and avail._slot is None
    picker.add_peer("a", Bitfield(n, range(0, n, 2)))
    picker.add_peer("b", has_all=True)
    picker.peer_has("a", 1)
    assert picker.pick("a", 4) == []
    assert avail._order is None
    assert picker.availability(1) == 2 and picker.availability(3) == 1
    avail.add(7)  # what a failed re-check does: the piece is wanted again
    assert list(avail.rarest()) == [7]
    avail.check()
