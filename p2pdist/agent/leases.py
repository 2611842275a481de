"""Leases: a package a running command uses is never removed, nor changed under it.

A lease ties a complete package to a process id; a lease whose process is gone is void and
dropped the next time leases are read. On Windows a lease also holds the package's files open
against change (``agent.pins``), after making sure they are still the files the last check
proved.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from p2pdist.agent.errors import BadRequest, Conflict, UnknownPackage
from p2pdist.agent.packages import COMPLETE, Package
from p2pdist.agent.pids import pid_alive
from p2pdist.agent.pins import Pin, hold
from p2pdist.agent.state import LeaseRow
from p2pdist.storage.base import StorageError
from p2pdist.storage.files import FileStorage

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")


def acquire(agent: Agent, package_id: str, pid: int, version: int | None = None) -> str:
    """Protect the package from removal while process ``pid`` runs; Conflict unless complete."""
    package_id = agent._package_id(package_id)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise BadRequest("pid must be a positive integer")
    package = agent._find(package_id, version) if version is not None else agent._selected_package(package_id)
    if package is None:
        raise UnknownPackage(f"{package_id} v{version} is not in the cache")
    if package.state != COMPLETE:
        raise Conflict(f"{package_id} v{package.row.version} is not complete ({package.state})")
    if not pid_alive(pid):
        raise BadRequest(f"process {pid} does not exist")
    assert agent.state is not None
    pin = agent._pin(package)
    lease = LeaseRow(secrets.token_hex(16), package.key, pid, agent.clock())
    try:
        agent.state.add_lease(lease)
    except BaseException:
        pin.close()
        raise
    agent.leases[lease.lease] = lease
    agent.pins[lease.lease] = pin
    log.info("%s: leased to process %d", package.meta.info.package, pid)
    return lease.lease


def pin(agent: Agent, package: Package) -> Pin:
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


def release(agent: Agent, lease: str) -> None:
    assert agent.state is not None
    if agent.leases.pop(lease, None) is None:
        raise UnknownPackage("no such lease")
    agent._unpin(lease)
    agent.state.delete_lease(lease)


def unpin(agent: Agent, lease: str) -> None:
    pin = agent.pins.pop(lease, None)
    if pin is not None:
        pin.close()


def in_use(agent: Agent) -> set[str]:
    """Info-hashes with a live lease; void leases (process gone) are dropped on the way."""
    live = set()
    for lease in list(agent.leases.values()):
        if pid_alive(lease.pid):
            live.add(lease.info_hash)
        else:
            del agent.leases[lease.lease]
            agent._unpin(lease.lease)
            if agent.state is not None:
                agent.state.delete_lease(lease.lease)
    return live
