"""Connection phases and the table of which message may arrive in which phase.

Theory of operation
-------------------
A peer connection goes through three phases. Until the 68-byte handshake arrives nothing else
is legal (AWAIT_HANDSHAKE). Right after it there is a short window (AWAIT_FIRST) where the peer
may describe what it has, with a ``bitfield`` or, under the fast extension, ``have_all`` /
``have_none``; BEP 3 says that message comes first, and stock clients put only the extension
handshake, ``allowed_fast`` and keep-alives before it, so those keep the window open. Any other
message closes the window (a peer with nothing need not send a bitfield) and the connection is
RUNNING, where a second bitfield is a protocol violation. Errors move to CLOSED for good.

The table is read, not computed: ``TRANSITIONS[(phase, type)]`` is the next phase, and a missing
entry is a ``ProtocolError`` for that peer (h11's ``_state.py`` is the model). Conditions that
depend on negotiation (fast-only messages, extension messages) are checked by the codec, which
knows what both handshakes said.
"""

from __future__ import annotations

import enum

from p2pdist.wire import messages as m


class Phase(enum.Enum):
    AWAIT_HANDSHAKE = "await handshake"
    AWAIT_FIRST = "await first message"
    RUNNING = "running"
    CLOSED = "closed"


_DESCRIBE = (m.BitfieldMessage, m.HaveAll, m.HaveNone)
_BEFORE_DESCRIBE = (m.ExtendedHandshake, m.Extended, m.KeepAlive, m.AllowedFast, m.Port)
_RUNNING = (
    m.KeepAlive,
    m.Choke,
    m.Unchoke,
    m.Interested,
    m.NotInterested,
    m.Have,
    m.Request,
    m.Piece,
    m.Cancel,
    m.Port,
    m.Suggest,
    m.Reject,
    m.AllowedFast,
    m.Extended,
    m.ExtendedHandshake,
)

TRANSITIONS: dict[tuple[Phase, type], Phase] = {
    (Phase.AWAIT_HANDSHAKE, m.Handshake): Phase.AWAIT_FIRST,
    **{(Phase.AWAIT_FIRST, kind): Phase.RUNNING for kind in _DESCRIBE},
    **{(Phase.AWAIT_FIRST, kind): Phase.RUNNING for kind in _RUNNING},
    **{(Phase.AWAIT_FIRST, kind): Phase.AWAIT_FIRST for kind in _BEFORE_DESCRIBE},
    **{(Phase.RUNNING, kind): Phase.RUNNING for kind in _RUNNING},
}

FAST_ONLY = (m.HaveAll, m.HaveNone, m.Suggest, m.Reject, m.AllowedFast)
EXTENSION_ONLY = (m.Extended, m.ExtendedHandshake)
