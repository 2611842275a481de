"""The check before a run: every piece hashed again from the files at their paths, unless they
kept the identity (size, mtime, change time, inode) the last check proved. A check passes only if
that identity did not move while it ran; a damaged package goes back to downloading to be
repaired. A long check goes on after the answer, which says ``checking`` with its progress.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from p2pdist.agent import running
from p2pdist.agent.errors import UnknownPackage
from p2pdist.agent.packages import CHECKING, COMPLETE, DOWNLOADING, Package, parse_package_id, selected_package
from p2pdist.control.schema import PackageStatus
from p2pdist.engine.torrent import TorrentState

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")


async def verify(agent: Agent, package_id: str) -> PackageStatus:
    """``Agent.verify``: the answer within ``verify_answer`` seconds, the check going on after it."""
    package = selected_package(agent.packages, parse_package_id(package_id))
    torrent = package.torrent
    if package.state in (CHECKING, DOWNLOADING) and (package.verify_job is None or package.verify_job.done()):
        return agent.status_of(package)  # not complete: nothing to run, nothing to check yet
    if package.state == COMPLETE and package.verified_as is not None and torrent is not None:
        if await torrent.storage.file_identity() == package.verified_as:
            return agent.status_of(package)
    job = package.verify_job
    if job is None or job.done():
        package.verify_progress = 0.0
        job = package.verify_job = agent.spawn(_recheck(agent, package))
    done, _ = await asyncio.wait({job}, timeout=agent.settings.verify_answer)
    if package.removed:
        raise UnknownPackage(f"{package_id} is not in the cache")
    if not done:
        status = agent.status_of(package)
        return status.replace(state=CHECKING, progress=round(package.verify_progress, 4), path=None, completed_at=None)
    return agent.status_of(package)


async def _recheck(agent: Agent, package: Package) -> None:
    """Hash every piece again; passes only if the files' identity did not move meanwhile."""
    async with package.lock:
        if package.removed:
            return
        package.verified_as = None
        torrent = package.torrent
        if torrent is not None and torrent.state in (TorrentState.SEEDING, TorrentState.DOWNLOADING):
            storage = torrent.storage
            before = await storage.file_identity()
            have = await storage.recheck(lambda done, total: setattr(package, "verify_progress", done / total if total else 1.0))
            after = await storage.file_identity()
            if have.all() and torrent.state is TorrentState.SEEDING and before == after:
                package.verified_as = after
                return
            why = "files changed while being checked" if before != after else f"{have.count} of {len(have)} pieces verify"
            log.warning("%s: %s; repairing", package.meta.info.package, why)
            await running.stop_locked(agent, package, announce=False)
        else:
            # Not running (error, or still checking): start over without resume data, so
            # every piece is hashed again.
            await running.stop_locked(agent, package, announce=False)
            assert agent.state is not None
            agent.state.forget_resume(package.key)
        await running.start_locked(agent, package)
