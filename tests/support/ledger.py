"""A real downloading torrent that audits its two ledgers of blocks in flight after every event.

What is in flight from a peer is written twice: the codec's ``requests_out`` and the picker's
requesters (``PiecePicker.requested_from``); engine/requests.py keeps them in step. The
audit checks that they agree for every connection each time the engine has finished handling
something: a wire event, a socket read's run of blocks, blocks read in place, a disconnect,
a tick, a piece back from storage. Nested calls (a handler that closes another connection)
are checked once, when the outermost one returns: in between, the engine is mid-step.

A check never raises into the engine (the driver would only log it and close the
connection): what it finds is recorded, and the test asserts on ``LedgerAudit.violations``.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.settlement import Settlement
from p2pdist.engine.torrent import Torrent
from p2pdist.wire import messages as m

Key = tuple[int, int, int]


class LedgerAudit:
    """The check and what it saw: counters say which paths a run exercised."""

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.depth = 0
        self.checks = 0
        self.violations: list[str] = []
        self.recent: deque[str] = deque(maxlen=40)  # the events before a violation, for its report
        self.events: Counter[str] = Counter()  # event name -> how many were handled
        self.placed_blocks = 0  # blocks the scatter-read driver put in place (engine/direct.py)
        self.copied_blocks = 0  # blocks that came through the codec's buffer
        self.duplicate_requests = 0  # checks that saw one block asked of two peers (endgame)

    @contextmanager
    def event(self, kind: str, detail: str = "") -> Iterator[None]:
        """Handle one thing; check both ledgers when the outermost handler returns normally
        (one that raised is followed by its connection's close, which is checked)."""
        self.depth += 1
        self.events[kind] += 1
        what = f"{kind} {detail}" if detail else kind
        self.recent.append(what)
        ok = False
        try:
            yield
            ok = True
        finally:
            self.depth -= 1
            if ok and self.depth == 0:
                self.check(what)

    def check(self, after: str) -> None:
        self.checks += 1
        if len(self.violations) >= 5:
            return
        torrent = self.torrent
        picker = torrent.picker
        if picker is None:
            return
        try:
            picker.check_invariants()
        except AssertionError as exc:
            self._report(after, f"picker invariant: {exc}")
            return
        known = [peer for peer in picker.peers if isinstance(peer, PeerConnection)]
        for conn in known:
            if conn.closed:
                self._report(after, f"{conn} is closed but the picker still knows it")
        asked: Counter[Key] = Counter()
        for conn in {*torrent.peers, *known}:
            codec = set(conn.wire.requests_out)
            ledger = {(block.index, block.begin, block.length) for block in picker.requested_from(conn)}
            asked.update(ledger)
            if codec != ledger:
                self._report(
                    after,
                    f"{conn}: only in requests_out {sorted(codec - ledger)}, only in the picker {sorted(ledger - codec)}"
                    f" (fast={conn.wire.fast}, peer_choking={conn.wire.peer_choking})",
                )
        if asked and max(asked.values()) > 1:
            self.duplicate_requests += 1

    def _report(self, after: str, problem: str) -> None:
        self.violations.append(f"after {after}: {problem}; events before it: {list(self.recent)}")


class AuditedTorrent(Torrent):
    """``Torrent`` with every entry point the engine is driven through wrapped in the audit.

    The wrappers only observe: each calls the real method and then checks."""

    __slots__ = ("audit",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.audit = LedgerAudit(self)

    def _swarm(self) -> None:
        """The torrent makes its parts when a swarm first needs them: the audited settlement
        replaces the plain one right then, before any piece reaches it."""
        super()._swarm()
        self.settlement = _AuditedSettlement(self)

    def on_event(self, conn: PeerConnection, event: object) -> None:
        detail = repr(event) if isinstance(event, (m.Reject, m.Have)) else ""
        with self.audit.event(type(event).__name__, f"{detail} from {conn}"):
            super().on_event(conn, event)

    def on_blocks(self, conn: PeerConnection, run: Sequence[tuple[int, int, memoryview]]) -> None:
        self.audit.copied_blocks += len(run)
        with self.audit.event("blocks", f"from {conn}: {[(index, begin) for index, begin, _ in run]}"):
            super().on_blocks(conn, run)

    def on_placed(self, conn: PeerConnection, keys: list[tuple[int, int, int]]) -> None:
        self.audit.placed_blocks += len(keys)
        with self.audit.event("placed", f"from {conn}: {[(index, begin) for index, begin, _ in keys]}"):
            super().on_placed(conn, keys)

    def on_requests(self, conn: PeerConnection, run: Sequence[tuple[int, int, int]]) -> None:
        with self.audit.event("requests", f"from {conn}"):
            super().on_requests(conn, run)

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None:
        with self.audit.event("disconnect", f"of {conn}: {reason}"):
            super().on_disconnect(conn, reason)

    def tick(self, now: float) -> None:
        with self.audit.event("tick"):
            super().tick(now)


class _AuditedSettlement(Settlement):
    """Pieces back from storage (verified or not) are events too: they announce and refill."""

    __slots__ = ()

    def piece_stored(self, index: int, buffer: bytearray, stored: asyncio.Future[bool]) -> None:
        torrent = cast(AuditedTorrent, self.torrent)
        with torrent.audit.event("stored", f"piece {index}"):
            super().piece_stored(index, buffer, stored)

    async def _settle(self, index: int, buffer: bytearray, ok: bool) -> None:
        # A failed hash (or a piece that failed before) settles in a task: check when it ends.
        torrent = cast(AuditedTorrent, self.torrent)
        await super()._settle(index, buffer, ok)
        with torrent.audit.event("settled", f"piece {index} ok={ok}"):
            pass
