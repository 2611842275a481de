"""The ``p2pdist_fetching`` extension (BEP 10): "I am fetching piece i from the web seed".

The PCs of a branch office share one WAN link to the distribution point, so each piece should
cross it once. Availability tells a PC which pieces its peers *have*; this message tells it
which pieces a peer is *fetching* over HTTP right now, so two PCs do not pull the same piece at
the same time (the race that turn-taking alone leaves open while PCs still disagree on who is
in the branch). A claim is advisory and short-lived: it ends when the claimer announces the
piece with ``have``, disconnects, or lets ``CLAIM_TTL`` pass. Claims only pass between peers of
one site's private swarm; one that claims and never delivers delays those pieces until its
claims expire, and at worst until nothing else is left to fetch and the web seed's stall rule
(no peer delivered anything for a while) sets claims aside.

Wire format: an extended message (id 20) whose extension id is the one the receiver assigned to
``p2pdist_fetching`` in its handshake; the payload is the piece index as 4 big-endian bytes.
Stock clients do not advertise the name, so they are never sent it.
"""

from __future__ import annotations

import struct

from p2pdist.errors import ProtocolError

NAME = "p2pdist_fetching"
LOCAL_ID = 1  # the id we assign to NAME in our extension handshake
# Longer than a 1 MiB piece takes over a busy 2 Mbit/s share of a WAN link; a claimer whose
# fetch failed usually takes the piece up again well before.
CLAIM_TTL = 60.0

_INDEX = struct.Struct(">I")


def encode_payload(index: int) -> bytes:
    """The payload of a claim for piece ``index``."""
    return _INDEX.pack(index)


def decode_payload(payload: bytes, num_pieces: int) -> int:
    """The piece index a claim names; ProtocolError for anything else."""
    if len(payload) != _INDEX.size:
        raise ProtocolError(f"{NAME} message of {len(payload)} bytes, expected {_INDEX.size}")
    index: int = _INDEX.unpack(payload)[0]
    if index >= num_pieces:
        raise ProtocolError(f"{NAME} for piece {index}, torrent has {num_pieces}")
    return index
