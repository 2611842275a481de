"""Removal: on request, by the retention policy (``cache.plan_cleanup``), and of orphaned folders.

A leased package is never removed; one advertised while cleanup waited for its lock is kept.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from p2pdist.agent.cache import CachedPackage, Removal, plan_cleanup
from p2pdist.agent.errors import Conflict, UnknownPackage
from p2pdist.agent import running
from p2pdist.agent.packages import Package, parse_package_id

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")
_HEX40 = re.compile(r"\A[0-9a-f]{40}\Z")


async def remove(agent: Agent, package_id: str) -> None:
    """``Agent.remove``: every cached version, and the memory of its refusal."""
    package_id = parse_package_id(package_id)
    async with agent.id_lock(package_id):
        versions = [p for p in agent.packages.values() if p.row.package_id == package_id]
        if not versions and package_id not in agent.fetches:
            raise UnknownPackage(f"{package_id} is not in the cache")
        in_use = agent.in_use()
        busy = [p for p in versions if p.key in in_use]
        if busy:
            raise Conflict(f"{package_id} v{busy[0].row.version} is in use by a running command")
        agent.fetches.pop(package_id, None)
        if agent.refusals.pop(package_id, None) is not None and agent.state is not None:
            agent.state.forget_refusal(package_id)
        for package in versions:
            await remove_package(agent, package, "removed on request")


async def remove_package(agent: Agent, package: Package, reason: str) -> None:
    """Stop it (``stopped`` to the tracker), forget its row and files, delete its folder."""
    assert agent.state is not None
    async with package.lock:
        if package.removed:
            return
        package.removed = True
        await running.stop_locked(agent, package, announce=True)
        agent.packages.pop(package.key, None)
        agent.state.delete_package(package.key)
        agent.state.forget_files(package.key)
    await _delete_folder(agent.settings.cache_dir / package.key)
    log.info("%s: removed (%s)", package.meta.info.package, reason)


async def _delete_folder(folder: Path) -> None:
    def delete() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    await asyncio.get_running_loop().run_in_executor(None, delete)


async def cleanup(agent: Agent, now: float | None = None) -> list[Removal]:
    """``Agent.cleanup``: what ``plan_cleanup`` names, unless advertised or leased meanwhile."""
    now = agent.clock() if now is None else now
    in_use = agent.in_use()
    cached = [CachedPackage(p.key, p.row.size, p.row.last_advertised) for p in agent.packages.values()]
    removals = plan_cleanup(cached, now, agent.limits, in_use)
    done = []
    for removal in removals:
        package = agent.packages.get(removal.key)
        if package is None:
            continue
        async with agent.id_lock(package.row.package_id):
            # An ensure may have advertised it while we waited for the lock.
            if package.removed or package.key in agent.in_use():
                continue
            if now < package.row.last_advertised + agent.limits.min_seed:
                continue
            await remove_package(agent, package, removal.reason)
            done.append(removal)
    await _sweep_orphans(agent, in_use)
    return done


async def _sweep_orphans(agent: Agent, in_use: set[str]) -> None:
    """Folders named like an info-hash that no package owns (a crash between steps)."""
    try:
        entries = list(agent.settings.cache_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        if _HEX40.match(entry.name) and entry.name not in agent.packages and entry.name not in in_use and entry.is_dir():
            log.info("removing orphaned cache folder %s", entry)
            await _delete_folder(entry)
