"""The two ledgers of blocks in flight agree after every event of a real download.

A request in flight is written in the peer's codec (``requests_out``) and in the picker (each
block's requesters, ``requested_from``); engine/requests.py keeps them in step. If they
disagree, a block can be asked of nobody and wait forever (the picker thinks it in flight), be
refused as unrequested when it comes (the codec forgot it), or be left out of endgame's
cancels and smart ban's evidence. ``tests.support.ledger.AuditedTorrent`` checks both after
every event the engine handles; here hypothesis chooses the swarm it downloads from: honest
p2pdist seeds and scripted peers (``tests.support.scripted_peer``) that choke and unchoke,
reject, forget or answer requests late and out of order, answer cancelled ones, send bad data
and drop the connection, with or without the fast extension; the download may start with all
but a few pieces (endgame from the first request). Over real sockets the scatter-read driver
(engine/direct.py) receives fast peers' blocks in place; over ``MemoryNet`` on a virtual clock
every block goes through the codec's buffer, and minutes of timeouts cost nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pdist.engine import direct
from p2pdist.engine.dialling import Connect, tcp_connect
from p2pdist.engine.session import Session, make_peer_id
from p2pdist.engine.settings import EngineSettings
from p2pdist.storage.memory import MemoryStorage
from tests.support.ledger import AuditedTorrent, LedgerAudit
from tests.support.ports import free_port
from tests.support.scripted_peer import Behaviour, ScriptedSwarmPeer
from tests.support.torrents import make_torrent, random_bytes
from tests.support.virtual import MemoryNet, VirtualLoop, inline_storage, run_virtual

PIECE = 64 * 1024  # four blocks a piece: pieces complete (and verify, and announce) often
DATA = random_bytes(20 * PIECE + 20_000, seed=41)  # a short last piece with a short last block
_, META = make_torrent({"pkg.bin": DATA}, single=True, name="pkg.bin", piece_length=PIECE)
PIECES = META.info.num_pieces

# Virtual seconds are free: the defaults' timing, but a faster tick and a snub after 5 s. No
# bans for strikes: an honest peer that sent half of a piece another corrupted gets one, and
# twice would end the peer the download relies on; smart ban's proof still bans the liar.
VIRTUAL = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.25, request_timeout=5.0, ban_after_failures=1000)
# Real seconds are not: a fast tick and snub, loopback peers; nothing waits on them otherwise.
REAL = EngineSettings(
    listen_host="127.0.0.1", listen_port=0, tick_interval=0.05, choke_interval=0.5, request_timeout=0.5, max_connections_per_address=8
)
VIRTUAL_CEILING = 3600.0  # virtual seconds a download may take (the loop also stops after 60 real ones)
REAL_CEILING = 30.0  # real seconds: a loopback download of 1.3 MB takes a fraction of one



@dataclass(frozen=True)
class Honest:
    """A real p2pdist session seeding; a slow one leaves work to the scripted peers."""

    upload_rate: int = 0  # bytes/s, 0 = unlimited


@dataclass(frozen=True)
class Swarm:
    """Who the download is from (the first always lets it finish) and what it starts with."""

    peers: tuple[Honest | Behaviour, ...]
    have: frozenset[int] = frozenset()


HONEST = Honest()


# -- the swarms hypothesis builds ------------------------------------------------------------


@st.composite
def behaviours(draw: st.DrawFn, *, reliable: bool, corrupt: bool, delays: tuple[float, ...]) -> Behaviour:
    """A scripted peer. A ``reliable`` one has every piece, never drops or forgets a request and
    sends good data: however it delays, rejects and chokes, the download can finish from it."""
    fast = draw(st.booleans())
    answer = draw(st.sampled_from([0.3, 0.6, 0.9, 1.0]))
    rest = 1.0 - answer
    reject = rest * draw(st.sampled_from([0.0, 0.5, 1.0])) if fast else 0.0
    forget = 0.0 if reliable else (rest - reject) * draw(st.sampled_from([0.0, 0.5, 1.0]))
    missing = frozenset() if reliable else draw(st.frozensets(st.integers(0, PIECES - 1), max_size=PIECES // 2))
    return Behaviour(
        fast=fast,
        extensions=draw(st.booleans()),
        missing=missing,
        answer=answer,
        reject=reject,
        forget=forget,
        shuffle=draw(st.booleans()),
        choke=draw(st.sampled_from([0.0, 0.05, 0.2])),
        reject_on_choke=draw(st.sampled_from([0.0, 0.5, 1.0])),
        late=draw(st.sampled_from([0.0, 0.3])),
        drop_after=None if reliable else draw(st.none() | st.integers(1, 40)),
        drops=draw(st.integers(1, 3)),
        delay=draw(st.sampled_from(delays)),
        corrupt=frozenset() if reliable or not corrupt else draw(st.frozensets(st.integers(0, PIECES - 1), max_size=3)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@st.composite
def swarms(draw: st.DrawFn, *, virtual: bool) -> Swarm:
    """Over sockets, no bad data (every peer shares 127.0.0.1, and a ban would end them all),
    no upload limit and short delays: those would cost real seconds."""
    delays = (0.0, 0.05, 0.5) if virtual else (0.0, 0.002, 0.01)
    honest = st.builds(Honest, st.sampled_from([0, 100_000, 400_000])) if virtual else st.just(HONEST)
    first = draw(honest | behaviours(reliable=True, corrupt=virtual, delays=delays))
    others = draw(st.lists(honest | behaviours(reliable=False, corrupt=virtual, delays=delays), max_size=2))
    # Most downloads start empty; some with all but one to three pieces (endgame at once).
    left = draw(st.none() | st.frozensets(st.integers(0, PIECES - 1), min_size=1, max_size=3))
    have = frozenset() if left is None else frozenset(range(PIECES)) - left
    return Swarm(peers=(first, *others), have=have)


# -- one download ----------------------------------------------------------------------------


@dataclass
class Outcome:
    audit: LedgerAudit
    data: bytes
    scripted: list[ScriptedSwarmPeer]


def _piece(index: int) -> bytes:
    return DATA[index * PIECE : index * PIECE + META.info.piece_size(index)]


Address = tuple[str, int]


async def _download(
    swarm: Swarm,
    *,
    settings: EngineSettings,
    storage: Callable[[bytes | None], MemoryStorage],
    clock: Callable[[], float],
    connect: Connect,
    seed: Callable[[int, Honest], Awaitable[tuple[Session, Address]]],
    listen: Callable[[Callable[[], asyncio.BaseProtocol]], Awaitable[Address]],
    ceiling: float,
) -> Outcome:
    """Start ``swarm``'s peers (``seed`` an honest one, ``listen`` a scripted one's listener),
    download from them with an ``AuditedTorrent``, and return what the audit saw and the bytes
    stored."""
    sessions: list[Session] = []
    scripted: list[ScriptedSwarmPeer] = []
    addresses: list[Address] = []
    torrent: AuditedTorrent | None = None
    try:
        for number, behaviour in enumerate(swarm.peers):
            if isinstance(behaviour, Honest):
                session, address = await seed(number, behaviour)
                sessions.append(session)
                addresses.append(address)
                await session.add_torrent(META, storage(DATA))
            else:
                peer = ScriptedSwarmPeer(META, DATA, behaviour, b"-SC0001-" + bytes([number]) * 12)
                scripted.append(peer)
                addresses.append(await listen(peer.protocol))
        store = storage(None)
        for index in sorted(swarm.have):
            assert await store.put_piece(index, _piece(index))
        torrent = AuditedTorrent(META, store, peer_id=make_peer_id(), settings=settings, rng=random.Random(7), clock=clock, connect=connect)
        await torrent.start()
        torrent.add_peer_addresses(addresses)
        async with asyncio.timeout(ceiling):
            await torrent.completed.wait()
        torrent.audit.check("completion")
        data = b"".join([await store.read_block(index, 0, META.info.piece_size(index)) for index in range(PIECES)])
        return Outcome(torrent.audit, data, scripted)
    finally:
        if torrent is not None:
            await torrent.stop()
        for peer in scripted:
            peer.close()
        for session in sessions:
            await session.close()


def _virtual(swarm: Swarm) -> Outcome:
    """The download over in-memory streams on a virtual clock: the plain receive path."""

    async def main(loop: VirtualLoop) -> Outcome:
        net = MemoryNet()
        hosts = iter(range(11, 200))

        async def listen(factory: Callable[[], asyncio.BaseProtocol]) -> Address:
            address = (f"127.0.0.{next(hosts)}", 6881)
            net.listen(address, factory)
            return address

        async def seed(number: int, honest: Honest) -> tuple[Session, Address]:
            limited = replace(VIRTUAL, upload_rate_limit=honest.upload_rate)
            session = Session(limited, rng=random.Random(number), clock=loop.time, connect=net.connect)
            return session, await listen(session.inbound)

        def storage(data: bytes | None) -> MemoryStorage:
            return inline_storage(META.info, data)

        outcome = await _download(
            swarm, settings=VIRTUAL, storage=storage, clock=loop.time, connect=net.connect, seed=seed, listen=listen,
            ceiling=VIRTUAL_CEILING,
        )  # fmt: skip
        await asyncio.sleep(1)  # the transports' last callbacks
        return outcome

    return run_virtual(main)


def _real(swarm: Swarm) -> Outcome:
    """The download over 127.0.0.1 sockets: fast peers' blocks are read in place."""

    async def main() -> Outcome:
        loop = asyncio.get_running_loop()
        servers: list[asyncio.Server] = []

        async def listen(factory: Callable[[], asyncio.BaseProtocol]) -> Address:
            port = free_port()
            servers.append(await loop.create_server(factory, "127.0.0.1", port))
            return ("127.0.0.1", port)

        async def seed(number: int, honest: Honest) -> tuple[Session, Address]:
            limited = replace(REAL, listen_port=free_port(), upload_rate_limit=honest.upload_rate)
            session = Session(limited, rng=random.Random(number))
            await session.start()
            return session, ("127.0.0.1", session.port)

        def storage(data: bytes | None) -> MemoryStorage:
            return MemoryStorage(META.info) if data is None else MemoryStorage.from_data(META.info, data)

        try:
            return await _download(
                swarm, settings=REAL, storage=storage, clock=loop.time, connect=tcp_connect, seed=seed, listen=listen,
                ceiling=REAL_CEILING,
            )  # fmt: skip
        finally:
            for server in servers:
                server.close()
                await server.wait_closed()
            await asyncio.sleep(0.05)  # aborted transports close on the next iterations

    return asyncio.run(main())


def _assert_agreed(outcome: Outcome) -> None:
    audit = outcome.audit
    assert not audit.violations, "\n".join(audit.violations)
    assert audit.checks > 0
    assert outcome.data == DATA


# -- the property ------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(swarm=swarms(virtual=True))
def test_ledgers_agree_after_every_event_over_memory_streams(swarm: Swarm) -> None:
    """Any swarm, every block through the codec's buffer; bad data (smart ban) included, since
    each peer has an address of its own here, and slow seeds, since time is virtual."""
    _assert_agreed(_virtual(swarm))


@pytest.mark.skipif(not direct.SUPPORTED, reason="scatter reads need recvmsg_into (POSIX)")
@pytest.mark.timeout(120)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(swarm=swarms(virtual=False))
def test_ledgers_agree_after_every_event_over_sockets(swarm: Swarm) -> None:
    """Any swarm on 127.0.0.1, blocks read in place when a peer is fast."""
    _assert_agreed(_real(swarm))


# -- the paths the property is about, shown to be taken -----------------------------------------


def test_endgame_asks_two_peers_for_a_block_and_the_ledgers_still_agree() -> None:
    """All but two pieces at the start: every missing block is requested at once, so endgame
    asks a second peer for the first's blocks and cancels the loser; the slow scripted peer,
    asked first, loses, and answers the cancelled requests all the same."""
    slow = Behaviour(fast=True, late=1.0, delay=0.5, seed=6)
    outcome = _virtual(Swarm(peers=(slow, HONEST, HONEST), have=frozenset(range(PIECES)) - {3, PIECES - 1}))
    _assert_agreed(outcome)
    assert outcome.audit.duplicate_requests > 0
    assert outcome.scripted[0].sent.get("crossed a cancel"), outcome.scripted[0].sent


@pytest.mark.skipif(not direct.SUPPORTED, reason="scatter reads need recvmsg_into (POSIX)")
def test_blocks_read_in_place_keep_the_ledgers_agreed() -> None:
    outcome = _real(Swarm(peers=(HONEST, Behaviour(seed=5))))
    _assert_agreed(outcome)
    assert outcome.audit.placed_blocks > 0, "no block was read in place: the scatter-read path was not exercised"


def test_every_scripted_misbehaviour_happens_and_the_ledgers_agree() -> None:
    """A fixed swarm in which each kind of trouble the property draws does occur: rejects,
    chokes with and without the fast extension, pieces that cross a cancel or a choke, pieces
    that fail their hash check and the smart ban that proves who sent the bad blocks."""
    moody = Behaviour(fast=True, answer=0.5, reject=0.3, shuffle=True, choke=0.3, reject_on_choke=0.5, late=0.5, delay=0.05, seed=1)
    blunt = Behaviour(fast=False, extensions=False, answer=0.3, forget=0.1, choke=0.5, late=1.0, delay=0.05, seed=2)
    liar = Behaviour(fast=True, answer=0.5, corrupt=frozenset({0, 1, 2, 5}), delay=0.3, seed=3)
    outcome = _virtual(Swarm(peers=(moody, blunt, liar)))
    _assert_agreed(outcome)
    events = outcome.audit.events
    assert events["Reject"] and events["Choke"] and events["Unchoke"], events
    assert events["settled"] and events["disconnect"], events  # failed pieces, a ban
    assert outcome.audit.duplicate_requests > 0
    assert outcome.scripted[1].sent.get("crossed a choke"), outcome.scripted[1].sent


def test_dropped_connections_are_dialled_again_and_the_ledgers_agree() -> None:
    """A peer that drops us twice, mid-download, behind a slow seed: its blocks go back each
    time, and it is dialled again (30 virtual seconds later) and used."""
    dropper = Behaviour(fast=True, shuffle=True, drop_after=6, drops=2, delay=0.05, seed=4)
    outcome = _virtual(Swarm(peers=(Honest(upload_rate=20_000), dropper)))
    _assert_agreed(outcome)
    assert outcome.scripted[0].sent.get("drop") == 2
    assert len(outcome.scripted[0].connections) == 3
    assert outcome.audit.events["disconnect"] >= 2
