"""The trust check of stored torrents at start: the record beside a stored torrent spares the
signature check only where the full check would say the same, and spares loading cryptography."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist import bencode
from p2pdist.agent.state import AgentState, PackageRow
from p2pdist.agent.torrent_source import TorrentRefused, check_torrent, recheck_stored, vouch_for
from p2pdist.metainfo import parse_metainfo
from p2pdist.outcomes import Problem
from tests.support.agents import agent_settings, make_package, running_agent, socket_dir
from tests.support.ports import free_port

PACKAGE = make_package("PS1000A1", 3, 70_000, announce="http://127.0.0.1:1/announce", seed=41)
TORRENT = PACKAGE.torrent
SIGNED = parse_metainfo(TORRENT)
assert SIGNED.signature is not None
KEYS = (SIGNED.signature.public_key,)
VOUCH = vouch_for(TORRENT, SIGNED)


def outcome(check: object) -> str:
    """What a check decided: the info-hash it accepted, or the kind of refusal."""
    try:
        return check()  # type: ignore[operator, no-any-return]  # a lambda returning the hex info-hash
    except TorrentRefused as exc:
        return f"refused: {exc.kind.value}"


def with_announce(data: bytes, url: bytes) -> bytes:
    """The same torrent with another tracker URL: valid bencode, the signature no longer covers it."""
    decoded = bencode.decode(data)
    decoded[b"announce"] = url
    return bencode.encode(decoded)


def test_an_unchanged_vouched_torrent_is_accepted() -> None:
    meta = recheck_stored(TORRENT, KEYS, "PS1000A1", 3, VOUCH)
    assert meta.info_hash_hex == PACKAGE.meta.info_hash_hex


def test_a_key_no_longer_trusted_refuses_even_with_the_record() -> None:
    other = bytes(32)
    assert outcome(lambda: recheck_stored(TORRENT, (other,), "PS1000A1", 3, VOUCH).info_hash_hex) == f"refused: {Problem.SIGNATURE.value}"


def test_a_rewritten_torrent_is_checked_in_full_and_refused() -> None:
    changed = with_announce(TORRENT, b"http://evil.example/announce")
    assert outcome(lambda: recheck_stored(changed, KEYS, "PS1000A1", 3, VOUCH).info_hash_hex) == f"refused: {Problem.SIGNATURE.value}"


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(TORRENT) - 1), value=st.integers(0, 255), vouch=st.sampled_from([VOUCH, None, "", "x" * 64]))
def test_the_record_never_changes_the_decision_of_the_full_check(index: int, value: int, vouch: str | None) -> None:
    """Any one byte of the stored torrent changed, any record: the same answer as check_torrent."""
    data = TORRENT[:index] + bytes([value]) + TORRENT[index + 1 :]
    full = outcome(lambda: check_torrent(data, KEYS, "PS1000A1", 3).info_hash_hex)
    assert outcome(lambda: recheck_stored(data, KEYS, "PS1000A1", 3, vouch).info_hash_hex) == full


def test_a_vouched_recheck_does_not_load_cryptography(tmp_path: Path) -> None:
    (tmp_path / "t.torrent").write_bytes(TORRENT)
    code = (
        "import sys; from pathlib import Path; from p2pdist.agent.torrent_source import recheck_stored\n"
        f"data = Path({str(tmp_path / 't.torrent')!r}).read_bytes()\n"
        f"recheck_stored(data, (bytes.fromhex({KEYS[0].hex()!r}),), 'PS1000A1', 3, sys.argv[1] or None)\n"
        "print(any(name.split('.')[0] == 'cryptography' for name in sys.modules))\n"
    )
    loaded = {}
    for label, vouch in (("vouched", VOUCH), ("unvouched", "")):
        result = subprocess.run([sys.executable, "-c", code, vouch], capture_output=True, text=True, timeout=60, check=True)
        loaded[label] = result.stdout.strip()
    assert loaded == {"vouched": "False", "unvouched": "True"}


async def test_at_start_records_are_written_and_a_rewritten_torrent_is_dropped(tmp_path: Path) -> None:
    """A torrent stored before records existed gets one; a torrent rewritten on disk is dropped."""
    plain = make_package("PS1000A2", 1, 50_000, announce="http://127.0.0.1:1/announce", seed=42)
    with socket_dir() as sockets:
        settings_ = agent_settings(tmp_path, 31, f"http://127.0.0.1:{free_port()}", sockets)
        settings_.state_dir.mkdir(parents=True)
        state = AgentState(settings_.state_dir)
        now = time.time()
        try:
            for package in (PACKAGE, plain):
                key, identity = package.meta.info_hash_hex, package.meta.info.package
                assert identity is not None
                state.save_torrent(key, package.torrent, vouch_for(package.torrent, parse_metainfo(package.torrent)))
                state.save_package(PackageRow(key, identity.package_id, identity.version, package.meta.info.name,
                                              package.meta.info.total_length, added_at=now, last_advertised=now))  # fmt: skip
            state.vouch_path(plain.meta.info_hash_hex).unlink()  # as an agent of an earlier version left it
            state.torrent_path(PACKAGE.meta.info_hash_hex).write_bytes(with_announce(TORRENT, b"http://evil.example/announce"))
        finally:
            state.close()
        async with running_agent(settings_) as (agent, _):
            assert set(agent.packages) == {plain.meta.info_hash_hex}
            assert agent.state is not None
            assert agent.state.load_vouch(plain.meta.info_hash_hex) == vouch_for(plain.torrent, parse_metainfo(plain.torrent))
            assert not agent.state.torrent_path(PACKAGE.meta.info_hash_hex).exists()
            assert not agent.state.vouch_path(PACKAGE.meta.info_hash_hex).exists()
