"""The piece picker: a pure ledger of which block is wanted, requested, received or verified.

Theory of operation
-------------------
Peers are opaque hashable ids; the engine tells the picker what happens to them and to each
block, and asks it what to request next. Nothing here reads a clock, a socket or the global
random module: the caller's ``random.Random`` breaks ties, so a seeded run replays exactly.

A missing piece is in one of two places:

* the **pool** (``availability.Availability``): nobody has requested or sent any block of it.
  It is kept in buckets by availability, each bucket in random order, so "rarest first, random
  among equals" is a walk from the lowest bucket that stops as soon as enough blocks are found.
  A HAVE moves one piece between buckets in O(1); a bitfield costs O(pieces it has); seeds are
  a counter. Nothing per request scans all pieces.
* **started** (``_Piece``): it has a state per block (free / requested / received), who was
  asked for each requested block and who sent each received one. Started pieces with a free
  block are also in ``_open``; a piece whose every block is requested or received is not, so
  picks never wade through pieces that have nothing to give.

``pick`` fills a peer's request queue in this order, only from pieces the peer has, and only
from pieces ``allowed`` accepts:

1. free blocks of started pieces, oldest first: finish what is started, so pieces complete,
   get verified and can be shared, and few partly-downloaded pieces pile up;
2. fresh pieces, whole and in block order (contiguous requests read well from the sender's
   disk): at random while we have fewer than ``random_first`` verified pieces, since a newcomer
   needs *some* piece soon to have something to trade and the rarest piece is typically the
   one with the fewest, possibly slow, sources; rarest first after that, which keeps rare
   pieces alive in the swarm and spreads different pieces over different peers;
3. in **endgame** (every missing block is requested, or at most ``endgame_threshold`` blocks
   are still to come), blocks already requested from *other* peers, each from at most
   ``endgame_duplicates`` peers at once. The first copy to arrive wins; ``block_received``
   returns the other requests to cancel. Without endgame the last few blocks wait on the
   slowest peer holding them.

A peer with few interesting pieces is served by scanning its own bitfield (in C, via a regex
over the packed bytes) instead of the pool, so a peer that has 3 of 100 000 pieces does not
cost a walk over the whole pool.

Alternatives considered: a single list sorted by (availability, random priority) with bucket
boundaries (libtorrent) gives the same costs in C++; in Python one list per bucket needs no
boundary shuffling and keeps each move to a few list operations. A heap keyed by availability
(some small clients) makes every HAVE an O(log n) decrease-key and has no cheap random tie
break. A chain of pickers (MonoTorrent's IPieceRequester: standard, rarest-first, randomised,
end-game switcher) is flexible but each layer re-filters the same pieces; here the three
stages share one ledger.

Left out on purpose: piece priorities and file selection (a package is fetched whole), peer
speed classes and piece affinity (libtorrent prefers sending a slow peer to the pieces other
slow peers work on; on a LAN the peers are alike), sequential/streaming modes, suggest and
allowed-fast sets (BEP 6; the engine can express allowed-fast with ``allowed``), and
time-critical pieces.

The module is long (about 800 lines) because the ledger is one object: picking, receiving,
giving back and verifying all change the same started pieces' per-block lists, and the
receive path settles a whole run with one slice operation on them. What splits cleanly is
split: the pool of untouched pieces (``availability``), the choker and smart ban.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable, Iterable, Sequence, Sized
from functools import partial
from itertools import groupby, islice, repeat
from operator import itemgetter
from typing import NamedTuple

from p2pdist.bitfield import Bitfield
from p2pdist.errors import LocalError, ProtocolError
from p2pdist.metainfo.layout import BLOCK_SIZE, Layout
from p2pdist.piece_picker.availability import Availability, iter_bits, popcount

FREE, REQUESTED, RECEIVED = 0, 1, 2
_FRESH, _STARTED, _HAVE = 0, 1, 2
_RANDOM_TRIES = 64
_REQUESTED_BYTE = bytes([REQUESTED])
_RECEIVED_BYTE = bytes([RECEIVED])
# Below one interesting piece in this many pool pieces, scan the peer's bitfield, not the pool.
_SPARSE_RATIO = 256


class Block(NamedTuple):
    """A request unit: ``length`` bytes at ``begin`` in piece ``index`` (16 KiB but the last).

    A named tuple rather than a frozen dataclass: blocks are made, hashed and compared once or
    twice per 16 KiB received, and a tuple does all three in C.
    """

    index: int  # type: ignore[assignment]  # shadows tuple.index(); the wire's name for the field wins
    begin: int
    length: int


# What take_block answers for almost every block: accepted, piece not complete, nothing to
# cancel. One shared object, so the engine's hot path tells it apart with ``is``.
TAKEN: tuple[bool, tuple[()]] = (False, ())
_TAKEN_LAST: tuple[bool, tuple[()]] = (True, ())


_new_block = partial(tuple.__new__, Block)


def _sole_run(piece: _Piece, peer: Hashable, run: tuple[tuple[int, int, int], ...]) -> tuple[int, int] | None:
    """Block numbers ``(first, last)`` when ``run`` (keys of ``piece``) is its blocks
    ``first..last-1`` exactly, in order and each asked of ``peer`` alone; else None.

    Two C-level comparisons for the whole run: the keys against the piece's own blocks
    (aligned, consecutive, canonical lengths) and who was asked (a block has requesters exactly
    while it is REQUESTED, so this also says none is received yet).
    """
    first = run[0][1] // BLOCK_SIZE
    last = first + len(run)
    if first >= 0 and run == piece.blocks[first:last] and piece.requesters[first:last] == [(peer,)] * len(run):
        return first, last
    return None


class PickerError(LocalError):
    """The engine asked about a peer the picker does not know, or a piece out of range."""


class _Piece:
    """A started piece: per-block state, who was asked for what, who sent what."""

    __slots__ = ("index", "blocks", "state", "requesters", "senders", "free", "received", "cursor")

    def __init__(self, index: int, blocks: tuple[Block, ...]) -> None:
        self.index = index
        self.blocks = blocks
        self.state = bytearray(len(blocks))
        # Per block number: the peers asked (None unless REQUESTED) and who sent it (None unless
        # RECEIVED). Lists, not dicts: a run of blocks is asked, checked and settled with one
        # slice operation each.
        self.requesters: list[tuple[Hashable, ...] | None] = [None] * len(blocks)
        self.senders: list[Hashable | None] = [None] * len(blocks)
        self.free = len(blocks)
        self.received = 0
        self.cursor = 0  # no free block below this


class _Peer:
    __slots__ = ("bits", "count", "interesting")

    def __init__(self) -> None:
        self.bits: bytearray | None = None  # packed wire-order bits; None for a seed
        self.count = 0  # pieces it has (bitfield peers)
        self.interesting = 0  # pieces it has that we have not verified (bitfield peers)
        # No set of the peer's requests: the started pieces' ``requesters`` say it, and a second
        # ledger would cost a set insert and removal per block on the hot path.


class PiecePicker:
    """Which blocks to request from which peer; see the module docstring."""

    # One per running torrent, seeds included: no per-instance dict.
    __slots__ = (
        "_n", "_rng", "_random_first", "_endgame_threshold", "_duplicates", "_piece_length", "_last_size", "_per_piece",
        "_have", "_state", "_avail", "_pieces", "_open", "_peers", "_remaining",
    )

    def __init__(
        self,
        layout: Layout,
        *,
        rng: random.Random,
        have: Bitfield | None = None,
        random_first: int = 4,
        endgame_threshold: int = 0,
        endgame_duplicates: int = 2,
    ) -> None:
        """``have``: pieces already verified (resume). ``random_first``: pick at random until
        this many pieces are verified. ``endgame_threshold``: enter endgame early once at most
        this many blocks remain to be received (0: only when every missing block is requested).
        ``endgame_duplicates``: in endgame, the most peers one block is requested from at once.
        """
        n = layout.num_pieces
        if have is not None and len(have) != n:
            raise PickerError(f"have bitfield of {len(have)} bits for {n} pieces")
        if endgame_duplicates < 1:
            raise PickerError("endgame_duplicates must be >= 1")
        self._n = n
        self._rng = rng
        self._random_first = random_first
        self._endgame_threshold = endgame_threshold
        self._duplicates = endgame_duplicates
        self._piece_length = layout.piece_length
        self._last_size = layout.piece_size(n - 1) if n else 0
        self._per_piece = -(-layout.piece_length // BLOCK_SIZE)
        self._have = have.copy() if have is not None else Bitfield(n)
        self._state = bytearray(n)
        for index in self._have:
            self._state[index] = _HAVE
        self._avail = Availability(n, rng=rng, pool=self._have.missing())
        self._pieces: dict[int, _Piece] = {}
        self._open: dict[int, _Piece] = {}
        self._peers: dict[Hashable, _Peer] = {}
        self._remaining = self._blocks_total() - sum(self._num_blocks(i) for i in self._have)

    # -- geometry -------------------------------------------------------------------------

    def _blocks_total(self) -> int:
        if not self._n:
            return 0
        return (self._n - 1) * self._per_piece + -(-self._last_size // BLOCK_SIZE)

    def _num_blocks(self, index: int) -> int:
        if index == self._n - 1:
            return -(-self._last_size // BLOCK_SIZE)
        return self._per_piece

    def _make_blocks(self, index: int) -> tuple[Block, ...]:
        size = self._last_size if index == self._n - 1 else self._piece_length
        whole, rest = divmod(size, BLOCK_SIZE)
        # What Block(...) does, iterated in C: a piece of 64 blocks is started 16 000 times a GiB.
        blocks = list(map(_new_block, zip(repeat(index), range(0, whole * BLOCK_SIZE, BLOCK_SIZE), repeat(BLOCK_SIZE))))
        if rest:
            blocks.append(Block(index, whole * BLOCK_SIZE, rest))
        return tuple(blocks)

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self._n:
            raise PickerError(f"piece {index} outside 0..{self._n - 1}")

    # -- read-only state ------------------------------------------------------------------

    @property
    def have(self) -> Bitfield:
        """Verified pieces. A live view: read it, change it only through ``piece_verified``."""
        return self._have

    def has(self, index: int) -> bool:
        return self._state[index] == _HAVE

    @property
    def num_pieces(self) -> int:
        return self._n

    @property
    def missing_count(self) -> int:
        return self._n - self._have.count

    @property
    def complete(self) -> bool:
        return self._have.count == self._n

    @property
    def endgame(self) -> bool:
        """Every missing block is requested (or few enough remain): duplicates allowed now."""
        if self.complete:
            return False
        no_free = not self._open and not len(self._avail)
        return no_free or self._remaining <= self._endgame_threshold

    @property
    def remaining_blocks(self) -> int:
        """Blocks of missing pieces not yet received."""
        return self._remaining

    @property
    def peers(self) -> tuple[Hashable, ...]:
        return tuple(self._peers)

    def availability(self, index: int) -> int:
        self._check_index(index)
        return self._avail[index]

    def requested_from(self, peer: Hashable) -> frozenset[Block]:
        """Blocks requested from ``peer`` and not received: a scan of the started pieces, for
        the rare moments that need them all (choke, disconnect, a storage error)."""
        return frozenset(self._requested_from(peer))

    def _requested_from(self, peer: Hashable) -> list[Block]:
        out: list[Block] = []
        for piece in self._pieces.values():
            blocks = piece.blocks
            out.extend([blocks[number] for number, asked in enumerate(piece.requesters) if asked is not None and peer in asked])
        return out

    def is_interesting(self, peer: Hashable) -> bool:
        """The peer has a piece we have not verified yet: O(1)."""
        state = self._peers.get(peer)
        if state is None:
            return False
        if state.bits is None:
            return self._have.count < self._n
        return state.interesting > 0

    def peer_is_seed(self, peer: Hashable) -> bool:
        state = self._peers.get(peer)
        return state is not None and state.bits is None

    def started_pieces(self) -> tuple[int, ...]:
        """Pieces with blocks requested or received, oldest first."""
        return tuple(self._pieces)

    def senders(self, index: int) -> dict[int, Hashable]:
        """Who sent each received block of a started piece: offset -> peer (smart-ban evidence).

        Read it when the piece is complete, before ``piece_verified``/``piece_failed``.
        """
        piece = self._pieces.get(index)
        if piece is None:
            return {}
        return {piece.blocks[number].begin: peer for number, peer in enumerate(piece.senders) if peer is not None}

    def block_state(self, block: Block) -> int:
        """FREE, REQUESTED or RECEIVED (FREE also for pieces not started; RECEIVED once we have it)."""
        if 0 <= block.index < self._n and self._state[block.index] == _HAVE:
            return RECEIVED
        piece = self._pieces.get(block.index)
        number = self._block_number(piece, block) if piece is not None else None
        return FREE if piece is None or number is None else piece.state[number]

    # -- peers ----------------------------------------------------------------------------

    def add_peer(self, peer: Hashable, bitfield: Bitfield | None = None, *, has_all: bool = False) -> None:
        """A peer's BITFIELD / HAVE_ALL / HAVE_NONE (or nothing yet). O(pieces it has).

        Calling it again for a known peer replaces what it has (a BITFIELD after an empty
        start); its outstanding requests stay. A full bitfield makes the peer a seed.
        """
        if bitfield is not None and len(bitfield) != self._n:
            raise PickerError(f"bitfield of {len(bitfield)} bits for {self._n} pieces")
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer()
        else:
            self._forget_pieces(state)
        if has_all or (bitfield is not None and bitfield.all() and self._n):
            self._avail.add_seed()
            state.bits = None
            return
        bits = bytearray(bitfield.to_bytes()) if bitfield is not None else bytearray((self._n + 7) // 8)
        state.bits = bits
        state.count = bitfield.count if bitfield is not None else 0
        if state.count:
            self._avail.add_bits(bits, state.count)
            shared = int.from_bytes(bits, "big") & int.from_bytes(self._have.to_bytes(), "big")
            state.interesting = state.count - shared.bit_count()
        else:
            state.interesting = 0

    def _forget_pieces(self, state: _Peer) -> None:
        if state.bits is None:
            self._avail.remove_seed()
        elif state.count:
            self._avail.remove_bits(state.bits, state.count)
        state.bits = bytearray((self._n + 7) // 8)
        state.count = 0
        state.interesting = 0

    def peer_has(self, peer: Hashable, index: int) -> None:
        """A HAVE message. An unknown peer is added with nothing first (BITFIELD is optional)."""
        if not 0 <= index < self._n:
            raise ProtocolError(f"HAVE for piece {index}, torrent has {self._n} pieces")
        state = self._peers.get(peer)
        if state is None:
            self.add_peer(peer)
            state = self._peers[peer]
        bits = state.bits
        if bits is None:
            return
        mask = 0x80 >> (index & 7)
        if bits[index >> 3] & mask:
            return
        bits[index >> 3] |= mask
        state.count += 1
        if self._state[index] != _HAVE:
            state.interesting += 1
        self._avail.increment(index)
        if state.count == self._n:
            # It became a seed: trade n bucket entries for the seed counter, once.
            self._avail.remove_bits(bits, state.count)
            self._avail.add_seed()
            state.bits = None
            state.interesting = 0

    def remove_peer(self, peer: Hashable) -> list[Block]:
        """The peer is gone: its requests go back to the pool; returns them (sorted)."""
        if peer not in self._peers:
            return []
        released = sorted(self._requested_from(peer), key=lambda b: (b.index, b.begin))
        for block in released:
            self._release(peer, block)
        state = self._peers.pop(peer)
        if state.bits is None:
            self._avail.remove_seed()
        elif state.count:
            self._avail.remove_bits(state.bits, state.count)
        return released

    # -- picking --------------------------------------------------------------------------

    def pick(self, peer: Hashable, count: int, *, allowed: Callable[[int], bool] | None = None) -> list[Block]:
        """Up to ``count`` new blocks to request from ``peer``; see the module docstring."""
        state = self._peers.get(peer)
        if state is None:
            raise PickerError(f"pick for unknown peer {peer!r}")
        out: list[Block] = []
        if count <= 0 or self._have.count == self._n:
            return out
        if state.bits is not None and state.interesting == 0:
            return out
        bits = state.bits
        if self._open:
            closed: list[int] = []
            for index, piece in self._open.items():
                if bits is not None and not bits[index >> 3] & (0x80 >> (index & 7)):
                    continue
                if allowed is not None and not allowed(index):
                    continue
                self._take_free(piece, peer, count - len(out), out)
                if not piece.free:
                    closed.append(index)
                if len(out) >= count:
                    break
            for index in closed:
                del self._open[index]
        if len(out) < count and len(self._avail):
            for index in self._choose_fresh(state, count - len(out), allowed):
                piece = self._start(index)
                self._take_free(piece, peer, count - len(out), out)
                if not piece.free:
                    del self._open[index]
        if len(out) < count and self.endgame:
            self._take_busy(peer, state, count - len(out), allowed, out)
        return out

    def _take_free(self, piece: _Piece, peer: Hashable, want: int, out: list[Block]) -> None:
        """Take up to ``want`` free blocks, lowest first, a contiguous run at a time."""
        state = piece.state
        blocks = piece.blocks
        number = piece.cursor
        while want > 0 and piece.free:
            start = state.find(FREE, number)
            if start < 0:
                break
            end = min(start + want, len(blocks))
            busy = state.find(REQUESTED, start, end)
            if busy >= 0:
                end = busy
            done = state.find(RECEIVED, start, end)
            if done >= 0:
                end = done
            run = end - start
            state[start:end] = _REQUESTED_BYTE * run
            piece.requesters[start:end] = [(peer,)] * run
            out.extend(blocks[start:end])
            piece.free -= run
            want -= run
            number = end
        piece.cursor = number if piece.free else len(blocks)

    def _choose_fresh(self, state: _Peer, want: int, allowed: Callable[[int], bool] | None) -> list[int]:
        """Pool pieces to start for this peer, enough for ``want`` blocks."""
        chosen: list[int] = []
        blocks = 0
        bits = state.bits
        avail = self._avail
        if self._have.count < self._random_first:
            random_ = self._rng.random
            n = self._n
            for _ in range(_RANDOM_TRIES):
                index = int(random_() * n)
                if index not in avail or index in chosen:
                    continue
                if bits is not None and not bits[index >> 3] & (0x80 >> (index & 7)):
                    continue
                if allowed is not None and not allowed(index):
                    continue
                chosen.append(index)
                blocks += self._num_blocks(index)
                if blocks >= want:
                    return chosen
        if bits is not None and state.interesting * _SPARSE_RATIO < len(avail):
            candidates = [
                i for i in iter_bits(bits) if i in avail and i not in chosen and (allowed is None or allowed(i))
            ]
            need_pieces = -(-(want - blocks) // self._per_piece) + 1
            for index in heapq.nsmallest(need_pieces, candidates, key=avail.sort_key):
                chosen.append(index)
                blocks += self._num_blocks(index)
                if blocks >= want:
                    break
            return chosen
        skip = set(chosen)
        for index in avail.rarest(skip_unshared=bits is not None):
            if bits is not None and not bits[index >> 3] & (0x80 >> (index & 7)):
                continue
            if index in skip or (allowed is not None and not allowed(index)):
                continue
            chosen.append(index)
            blocks += self._num_blocks(index)
            if blocks >= want:
                break
        return chosen

    def _take_busy(
        self, peer: Hashable, state: _Peer, want: int, allowed: Callable[[int], bool] | None, out: list[Block]
    ) -> None:
        """Endgame: blocks requested from others, fewest requesters first within each piece."""
        bits = state.bits
        limit = self._duplicates
        for index, piece in self._pieces.items():
            if REQUESTED not in piece.state:
                continue
            if bits is not None and not bits[index >> 3] & (0x80 >> (index & 7)):
                continue
            if allowed is not None and not allowed(index):
                continue
            asked = piece.requesters
            requested = [(number, who) for number, who in enumerate(asked) if who is not None]
            for number, requesters in sorted(requested, key=lambda item: len(item[1])):
                if len(requesters) >= limit or peer in requesters:
                    continue
                asked[number] = (*requesters, peer)
                out.append(piece.blocks[number])
                want -= 1
                if not want:
                    return

    def _start(self, index: int) -> _Piece:
        self._avail.discard(index)
        self._state[index] = _STARTED
        piece = _Piece(index, self._make_blocks(index))
        self._pieces[index] = piece
        self._open[index] = piece
        return piece

    def _return_if_idle(self, piece: _Piece) -> None:
        """A started piece with nothing requested or received goes back to the pool."""
        if piece.free == len(piece.blocks):
            del self._pieces[piece.index]
            self._open.pop(piece.index, None)
            self._state[piece.index] = _FRESH
            self._avail.add(piece.index)

    # -- block life -----------------------------------------------------------------------

    def _block_number(self, piece: _Piece, block: Block) -> int | None:
        number, rest = divmod(block.begin, BLOCK_SIZE)
        if rest or not 0 <= number < len(piece.blocks) or piece.blocks[number].length != block.length:
            return None
        return number

    def block_received(self, peer: Hashable, block: Block) -> tuple[bool, list[tuple[Hashable, Block]]]:
        """Data for ``block`` arrived from ``peer``.

        Returns (the piece is now fully received, [(other peer, block) requests to cancel]).
        A block nobody was asked for, or one already received, changes nothing: (False, []).
        A block requested from someone else but delivered by ``peer`` is accepted.
        """
        taken = self.take_block(peer, block.index, block.begin, block.length)
        return (False, []) if taken is None else (taken[0], list(taken[1]))

    def requested_only_by(self, peer: Hashable, index: int, begin: int) -> bool:
        """True when block ``begin`` of piece ``index`` is requested from ``peer`` and from no one
        else, and not received yet: then nobody but that peer's answer may fill its bytes, which
        is what lets a driver read the answer straight into the piece's buffer."""
        piece = self._pieces.get(index)
        number, offset = divmod(begin, BLOCK_SIZE)
        if piece is None or offset or not 0 <= number < len(piece.blocks):
            return False
        return self._sole_prefix(peer, piece, (piece.blocks[number],)) == 1

    def sole_requests(self, peer: Hashable, blocks: Iterable[tuple[int, int, int]], limit: int) -> int:
        """How many of ``blocks`` (``(index, begin, length)`` as requested), from the first on,
        are each ``requested_only_by(peer, ...)`` with the block's own length; at most ``limit``.

        One call per socket read. Requests go out a piece's blocks in order, so each piece's
        run is checked with two C-level comparisons (the blocks, who was asked) instead of a
        step per block; a run that fails them is walked block by block.
        """
        count = 0
        for index, group in groupby(islice(blocks, limit), key=itemgetter(0)):
            piece = self._pieces.get(index)
            if piece is None:
                break
            run = tuple(group)
            if _sole_run(piece, peer, run) is not None:
                count += len(run)
                continue
            sole = self._sole_prefix(peer, piece, run)
            count += sole
            if sole < len(run):
                break
        return count

    @staticmethod
    def _sole_prefix(peer: Hashable, piece: _Piece, run: Sequence[tuple[int, int, int]]) -> int:
        """``sole_requests`` for blocks of one piece, a step per block."""
        blocks, state, requesters = piece.blocks, piece.state, piece.requesters
        count = 0
        for _, begin, length in run:
            number, offset = divmod(begin, BLOCK_SIZE)
            if offset or not 0 <= number < len(blocks) or blocks[number][2] != length or state[number] != REQUESTED:
                break
            asked = requesters[number]
            if asked is None or len(asked) != 1 or asked[0] != peer:
                break
            count += 1
        return count

    def take_block(self, peer: Hashable, index: int, begin: int, length: int) -> tuple[bool, Sequence[tuple[Hashable, Block]]] | None:
        """``block_received`` for the engine's hot path: coordinates in, no Block built.

        None when the block is not wanted (not requested from anyone, or already received or
        verified), and then nothing changes; else (piece complete, requests to cancel), which
        is the shared ``TAKEN`` object in the common case.
        """
        piece = self._pieces.get(index)
        return None if piece is None else self._take(piece, peer, begin, length)

    def take_blocks(self, peer: Hashable, run: Sequence[tuple[int, int, Sized]]) -> list[tuple[bool, Sequence[tuple[Hashable, Block]]] | None]:
        """``take_block`` for each ``(index, begin, data)`` of a run from one peer (only
        ``len(data)`` is read), answers in order: exactly what the calls one by one would give.

        The engine's receive path: a socket read carries a dozen blocks, mostly of one piece,
        so the piece's ledger is looked up once per piece instead of once per block.
        """
        pieces, take = self._pieces, self._take
        answers: list[tuple[bool, Sequence[tuple[Hashable, Block]]] | None] = []
        current, piece = -1, None
        for index, begin, data in run:
            if index != current:
                current, piece = index, pieces.get(index)
            answers.append(None if piece is None else take(piece, peer, begin, len(data)))
        return answers

    def take_sole_run(self, peer: Hashable, keys: Sequence[tuple[int, int, int]]) -> list[tuple[bool, Sequence[tuple[Hashable, Block]]] | None]:
        """``take_blocks`` for blocks given as ``(index, begin, length)``: the same answers, and
        the same ledger afterwards, for any input.

        Made for blocks a driver read in place, which ``sole_requests`` vouched for a moment
        ago: each piece's consecutive run of them, all still asked of ``peer`` alone, is settled
        with slice assignments and C-level bulk updates instead of a ledger step per block.
        Anything else (a gap, a block no longer sole) goes through the per-block update.
        """
        answers: list[tuple[bool, Sequence[tuple[Hashable, Block]]] | None] = []
        for index, group in groupby(keys, key=itemgetter(0)):
            run = tuple(group)
            piece = self._pieces.get(index)
            if piece is None:
                answers.extend(repeat(None, len(run)))
                continue
            span = _sole_run(piece, peer, run)
            if span is None:
                answers.extend([self._take(piece, peer, begin, length) for _, begin, length in run])
                continue
            first, last = span
            count = last - first
            piece.requesters[first:last] = [None] * count
            piece.state[first:last] = _RECEIVED_BYTE * count
            piece.received += count
            piece.senders[first:last] = [peer] * count
            self._remaining -= count
            answers.extend(repeat(TAKEN, count - 1))
            answers.append(_TAKEN_LAST if piece.received == len(piece.blocks) else TAKEN)
        return answers

    def _take(self, piece: _Piece, peer: Hashable, begin: int, length: int) -> tuple[bool, Sequence[tuple[Hashable, Block]]] | None:
        """The ledger update behind ``take_block`` and ``take_blocks``."""
        number = begin // BLOCK_SIZE
        blocks = piece.blocks
        if begin % BLOCK_SIZE or not 0 <= number < len(blocks) or piece.state[number] != REQUESTED or blocks[number][2] != length:
            return None
        # A REQUESTED block has requesters (the ledger's invariant); no check on this hot path.
        requesters: tuple[Hashable, ...] = piece.requesters[number]  # type: ignore[assignment]  # never None here
        piece.requesters[number] = None
        piece.state[number] = RECEIVED
        piece.received += 1
        piece.senders[number] = peer
        self._remaining -= 1
        done = piece.received == len(blocks)
        if len(requesters) == 1 and requesters[0] == peer:
            return _TAKEN_LAST if done else TAKEN
        canonical = blocks[number]
        return done, [(other, canonical) for other in requesters if other != peer]

    def block_lost(self, peer: Hashable, block: Block) -> None:
        """A request to ``peer`` is void (rejected, choked, timed out): the block is free again
        unless another peer was also asked for it."""
        if peer in self._peers:
            self._release(peer, block)

    def _release(self, peer: Hashable, block: Block) -> None:
        piece = self._pieces.get(block.index)
        if piece is None:
            return
        number = self._block_number(piece, block)
        if number is None:
            return
        asked = piece.requesters[number]
        if asked is None or peer not in asked:
            return
        remaining = tuple(p for p in asked if p != peer)
        if remaining:
            piece.requesters[number] = remaining
            return
        piece.requesters[number] = None
        piece.state[number] = FREE
        piece.free += 1
        piece.cursor = min(piece.cursor, number)
        if piece.index not in self._open:
            self._open[piece.index] = piece
        self._return_if_idle(piece)

    def piece_verified(self, index: int) -> None:
        """The piece's hash checked out: we have it. Any requests still out for it are dropped
        from the ledger (data arriving for them later is ignored)."""
        self._check_index(index)
        if self._state[index] == _HAVE:
            return
        piece = self._pieces.pop(index, None)
        self._open.pop(index, None)
        if piece is not None:
            self._remaining -= len(piece.blocks) - piece.received
        else:
            self._avail.discard(index)
            self._remaining -= self._num_blocks(index)
        self._state[index] = _HAVE
        self._have.set(index)
        byte, mask = index >> 3, 0x80 >> (index & 7)
        for state in self._peers.values():
            if state.bits is not None and state.bits[byte] & mask:
                state.interesting -= 1

    def piece_failed(self, index: int) -> dict[Hashable, int]:
        """The piece's hash was wrong: every received block is free again.

        Returns {peer: blocks it contributed} for the strike policy. Requests still out for the
        piece stay out (their data is as good as any).
        """
        self._check_index(index)
        piece = self._pieces.get(index)
        if piece is None:
            return {}
        contributed: dict[Hashable, int] = {}
        for number, sender in enumerate(piece.senders):
            if sender is None:
                continue
            contributed[sender] = contributed.get(sender, 0) + 1
            piece.state[number] = FREE
        piece.free += piece.received
        self._remaining += piece.received
        piece.received = 0
        piece.senders[:] = [None] * len(piece.senders)
        piece.cursor = 0
        if piece.free:
            self._open[index] = piece
        self._return_if_idle(piece)
        return contributed

    # -- checking -------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Assert that every index agrees with every other (tests; O(pieces x peers))."""
        self._avail.check()
        requested: dict[Block, set[Hashable]] = {}
        for index, piece in self._pieces.items():
            assert self._state[index] == _STARTED and index not in self._avail
            assert piece.free == piece.state.count(FREE)
            assert len(piece.requesters) == len(piece.senders) == len(piece.blocks)
            assert [i for i, who in enumerate(piece.senders) if who is not None] == [i for i, s in enumerate(piece.state) if s == RECEIVED]
            assert piece.received == piece.state.count(RECEIVED)
            assert [i for i, who in enumerate(piece.requesters) if who is not None] == [i for i, s in enumerate(piece.state) if s == REQUESTED]
            assert (index in self._open) == (piece.free > 0)
            assert piece.free < len(piece.blocks)
            assert FREE not in piece.state[: piece.cursor]
            for number, who in enumerate(piece.requesters):
                if who is None:
                    continue
                assert who and len(set(who)) == len(who)
                requested[piece.blocks[number]] = set(who)
        for block, asked in requested.items():
            for peer in asked:
                assert peer in self._peers, f"{block} is asked of {peer!r}, who is gone"
        for index in range(self._n):
            have = self._state[index] == _HAVE
            assert have == self._have[index]
            assert (self._state[index] == _FRESH) == (index in self._avail)
        remaining = sum(
            self._num_blocks(i) - (self._pieces[i].received if i in self._pieces else 0)
            for i in range(self._n)
            if self._state[i] != _HAVE
        )
        assert remaining == self._remaining, (remaining, self._remaining)
        for state in self._peers.values():
            if state.bits is not None:
                assert popcount(state.bits) == state.count < self._n or self._n == 0
                lacking = sum(1 for i in iter_bits(state.bits) if self._state[i] != _HAVE)
                assert lacking == state.interesting
