"""Smart ban finds the peer that sent bad data, not everyone who helped; strikes do the rest."""

from __future__ import annotations

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import BLOCK_SIZE, FileEntry, Info, Layout
from p2pdist.piece_picker import PiecePicker, SmartBan, Strikes

BLOCKS = 4


def one_piece_layout() -> Layout:
    size = BLOCKS * BLOCK_SIZE
    return Layout(Info("pkg", size, bytes(20), (FileEntry(("pkg",), size, 0),), False, True, None, size))


def good(begin: int) -> bytes:
    return bytes([begin // BLOCK_SIZE + 1]) * 64


def digest(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


GOOD = {b * BLOCK_SIZE: digest(good(b * BLOCK_SIZE)) for b in range(BLOCKS)}


def feed(ban: SmartBan, index: int, senders: dict[int, str], bad: set[str]) -> None:
    for begin, peer in senders.items():
        data = good(begin) if peer not in bad else b"corrupt" + good(begin)[7:]
        ban.block_received(peer, index, begin, digest(data))


def test_only_the_peer_with_the_bad_block_is_a_culprit() -> None:
    ban = SmartBan()
    feed(ban, 7, {0: "a", BLOCK_SIZE: "evil", 2 * BLOCK_SIZE: "b", 3 * BLOCK_SIZE: "a"}, bad={"evil"})
    ban.piece_failed(7)
    feed(ban, 7, {b * BLOCK_SIZE: "c" for b in range(BLOCKS)}, bad=set())
    assert ban.piece_verified(7, GOOD) == {"evil"}
    assert ban.tracked() == (0, 0)


def test_several_failed_attempts_all_count() -> None:
    ban = SmartBan()
    feed(ban, 1, {0: "x", BLOCK_SIZE: "y"}, bad={"x"})
    ban.piece_failed(1)
    feed(ban, 1, {0: "z", BLOCK_SIZE: "y"}, bad={"z"})
    ban.piece_failed(1)
    assert ban.tracked() == (0, 1)
    assert ban.piece_verified(1, GOOD) == {"x", "z"}


def test_verified_without_failure_accuses_nobody_and_frees_memory() -> None:
    ban = SmartBan()
    feed(ban, 3, {0: "a", BLOCK_SIZE: "b"}, bad=set())
    assert ban.tracked() == (1, 0)
    assert ban.piece_verified(3, GOOD) == set()
    assert ban.tracked() == (0, 0)


def test_memory_is_bounded_by_failed_pieces_and_attempts() -> None:
    ban = SmartBan(max_failed_pieces=3, max_attempts=2)
    for index in range(10):
        for _ in range(5):
            feed(ban, index, {0: "a"}, bad={"a"})
            ban.piece_failed(index)
    assert ban.tracked() == (0, 3)
    assert ban.piece_verified(0, GOOD) == set()  # forgotten: the oldest went first
    assert ban.piece_verified(9, GOOD) == {"a"}


def test_forget_peer_and_record_failed() -> None:
    ban = SmartBan()
    ban.record_failed(2, {0: ("gone", digest(b"bad")), BLOCK_SIZE: ("bad", digest(b"bad"))})
    ban.forget_peer("gone")
    assert ban.piece_verified(2, GOOD) == {"bad"}
    feed(ban, 4, {0: "gone"}, bad={"gone"})
    ban.piece_failed(4)
    ban.forget_peer("gone")
    assert ban.tracked() == (0, 0)


def test_strikes_policy() -> None:
    strikes = Strikes(failures_to_ban=2)
    assert strikes.piece_failed({"sole": 4}) == set()
    assert strikes.piece_failed({"big": 3, "small": 1}) == set()
    assert strikes.strikes("small") == 0 and strikes.strikes("big") == 1
    assert strikes.piece_failed({"sole": 2, "big": 2}) == {"sole", "big"}
    assert strikes.piece_failed({"sole": 1}) == set()  # already banned: reported once
    assert strikes.culprits({"small", "sole"}) == {"small"}
    assert strikes.is_banned("small") and not strikes.is_banned("other")
    strikes.forget_peer("big")
    assert strikes.is_banned("big") and strikes.strikes("big") == 0


def test_with_the_picker_a_bad_peer_is_banned_and_the_honest_one_is_not() -> None:
    picker = PiecePicker(one_piece_layout(), rng=random.Random(0), random_first=0)
    ban, strikes = SmartBan(), Strikes()
    picker.add_peer("honest", Bitfield.full(1))
    picker.add_peer("evil", Bitfield.full(1))
    for peer in ("honest", "evil", "honest", "evil"):
        (block,) = picker.pick(peer, 1)
        data = good(block.begin) if peer == "honest" else b"x" * 64
        picker.block_received(peer, block)
        ban.block_received(peer, block.index, block.begin, digest(data))
    assert strikes.piece_failed(picker.piece_failed(0)) == set()  # 2 + 2: each got one strike
    ban.piece_failed(0)
    picker.remove_peer("evil")
    for block in picker.pick("honest", 10):
        picker.block_received("honest", block)
        ban.block_received("honest", 0, block.begin, digest(good(block.begin)))
    assert strikes.culprits(ban.piece_verified(0, GOOD)) == {"evil"}
    picker.piece_verified(0)
    assert picker.complete and not strikes.is_banned("honest")


@settings(max_examples=150, deadline=None)
@given(
    assignment=st.lists(st.sampled_from("abcde"), min_size=BLOCKS, max_size=BLOCKS),
    bad=st.sets(st.sampled_from("abcde")),
    attempts=st.integers(1, 3),
)
def test_culprits_are_exactly_the_bad_senders(assignment: list[str], bad: set[str], attempts: int) -> None:
    ban = SmartBan()
    for _ in range(attempts):
        feed(ban, 0, {i * BLOCK_SIZE: peer for i, peer in enumerate(assignment)}, bad)
        ban.piece_failed(0)
    assert ban.piece_verified(0, GOOD) == bad & set(assignment)


def test_strikes_by_address_survive_and_stay_bounded() -> None:
    """The engine keys strikes by IP address: a reconnect is the same peer. Strikes of many
    addresses are remembered up to a bound (oldest first out); bans are kept."""
    strikes = Strikes(failures_to_ban=2, max_tracked=2)
    assert strikes.piece_failed({"10.0.0.1": 2}) == set()
    assert strikes.piece_failed({"10.0.0.1": 2}) == {"10.0.0.1"}
    assert strikes.banned == frozenset({"10.0.0.1"})
    strikes.piece_failed({"10.0.0.2": 1})
    strikes.piece_failed({"10.0.0.3": 1})
    strikes.piece_failed({"10.0.0.4": 1})
    assert strikes.strikes("10.0.0.2") == 0 and strikes.strikes("10.0.0.4") == 1
    assert strikes.is_banned("10.0.0.1")
