"""Leases: a package a running command uses is never removed, nor changed under it.

A lease ties a complete package to a process id; a lease whose process is gone is void and
dropped the next time leases are read. On Windows a lease also holds the package's files open
against change (``agent.pins``), after making sure they are still the files the last check
proved.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from p2pdist.agent.errors import BadRequest, Conflict, UnknownPackage
from p2pdist.agent.packages import COMPLETE, Package
from p2pdist.agent.pids import pid_alive
from p2pdist.agent.pins import Pin, hold
from p2pdist.agent.state import AgentState, LeaseRow
from p2pdist.storage.base import StorageError
from p2pdist.storage.files import FileStorage

log = logging.getLogger("p2pdist.agent")


class Leases:
    """The live leases by id and the pins that hold their files; the rows are kept in SQLite, so
    a lease outlives a restart of the agent for as long as its process runs."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.state: AgentState | None = None
        self.rows: dict[str, LeaseRow] = {}
        self.pins: dict[str, Pin] = {}  # lease -> the package's files held open (Windows)

    def load(self, state: AgentState) -> None:
        """The leases of last time, from the agent's state."""
        self.state = state
        self.rows = {row.lease: row for row in state.leases()}

    def acquire(self, package: Package, pid: int) -> str:
        """A lease on ``package`` for process ``pid``; Conflict unless complete."""
        if package.state != COMPLETE:
            raise Conflict(f"{package.row.package_id} v{package.row.version} is not complete ({package.state})")
        if not pid_alive(pid):
            raise BadRequest(f"process {pid} does not exist")
        assert self.state is not None
        pin = pin_files(package)
        lease = LeaseRow(secrets.token_hex(16), package.key, pid, self.clock())
        try:
            self.state.add_lease(lease)
        except BaseException:
            pin.close()
            raise
        self.rows[lease.lease] = lease
        self.pins[lease.lease] = pin
        log.info("%s: leased to process %d", package.meta.info.package, pid)
        return lease.lease

    def hold_again(self, package: Package) -> None:
        """Leases that outlived the agent's last run hold their files again (Windows, agent.pins).

        As taking a lease does: the files are held first, then compared with what was last
        proved, here the file states the start-up check just judged (resume data or hashing);
        a lease whose files cannot be held or have changed keeps the package but holds nothing.
        """
        torrent = package.torrent
        rows = [row for row in self.rows.values() if row.info_hash == package.key and row.lease not in self.pins]
        if not rows or torrent is None or not isinstance(torrent.storage, FileStorage):
            return
        storage = torrent.storage
        for row in rows:
            try:
                if package.state != COMPLETE:
                    raise StorageError(f"it is {package.state} after the start")
                storage.close_descriptors()
                pin = hold(storage.data_paths())
                if storage.file_identity_now() != storage.start_identity:
                    pin.close()
                    raise StorageError("its files changed since the start-up check")
            except (OSError, StorageError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.warning("%s: the lease of process %d holds no files: %s", package.meta.info.package, row.pid, why)
                continue
            self.pins[row.lease] = pin
            if pin:
                log.info("%s: the lease of process %d holds its files again", package.meta.info.package, row.pid)

    def release(self, lease: str) -> None:
        assert self.state is not None
        if self.rows.pop(lease, None) is None:
            raise UnknownPackage("no such lease")
        self._unpin(lease)
        self.state.delete_lease(lease)

    def _unpin(self, lease: str) -> None:
        pin = self.pins.pop(lease, None)
        if pin is not None:
            pin.close()

    def in_use(self) -> set[str]:
        """Info-hashes with a live lease; void leases (process gone) are dropped on the way."""
        live = set()
        for lease in list(self.rows.values()):
            if pid_alive(lease.pid):
                live.add(lease.info_hash)
            else:
                del self.rows[lease.lease]
                self._unpin(lease.lease)
                if self.state is not None:
                    self.state.delete_lease(lease.lease)
        return live

    def close(self) -> None:
        """Let go of every pin (the rows stay: their processes may outlive the agent)."""
        for pin in self.pins.values():
            pin.close()
        self.pins.clear()


def pin_files(package: Package) -> Pin:
    """Hold the package's files against change (Windows, agent.pins) and make sure they are
    still the files the last check proved: nothing can swap them from here on."""
    torrent = package.torrent
    if torrent is None or not isinstance(torrent.storage, FileStorage):
        return Pin()
    storage = torrent.storage
    storage.close_descriptors()
    try:
        pin = hold(storage.data_paths())
    except OSError as exc:
        raise Conflict(f"{package.row.package_id} v{package.row.version}: {exc.strerror}; try again") from None
    try:
        changed = package.verified_as is not None and storage.file_identity_now() != package.verified_as
    except (OSError, StorageError):
        changed = True
    if changed:
        pin.close()
        package.verified_as = None  # the next verify hashes it all again
        raise Conflict(f"{package.row.package_id} v{package.row.version} changed since it was checked; check it again")
    return pin
