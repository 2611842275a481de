"""The asyncio helpers every owner of background work uses, and the rule they stand for."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import p2pdist
from p2pdist.aio import stop_tasks, wait_event


async def test_wait_event_is_true_when_set_and_false_on_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 30.0) is True
    assert await wait_event(event, 0) is True  # already set: no wait at all


async def test_wait_event_passes_on_a_cancel_that_arrives_with_the_event() -> None:
    """The 3.11 ``wait_for`` race (CPython gh-86296): set and cancel in one loop iteration."""
    event = asyncio.Event()
    waiter = asyncio.ensure_future(wait_event(event, 60.0))
    await asyncio.sleep(0)  # the waiter is parked on the event
    event.set()
    waiter.cancel()
    async with asyncio.timeout(10):
        await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()


async def test_stop_tasks_cancels_and_waits_and_swallows_their_errors() -> None:
    finished: list[str] = []

    async def tidy() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # clean-up that needs the loop
            finished.append("tidy")

    async def broken() -> None:
        raise RuntimeError("boom")

    tasks = [asyncio.ensure_future(tidy()), asyncio.ensure_future(broken())]
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await stop_tasks(tasks)
    assert finished == ["tidy"]
    assert all(task.done() for task in tasks)


async def test_stop_tasks_leaves_a_task_that_ignores_cancel_behind_after_its_bound() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # the kind of bug stop_tasks must survive

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(30):
        await stop_tasks([task], bound=0.05)
    assert not task.done()  # given up on, not waited for
    release.set()
    await task


def test_no_module_of_p2pdist_calls_wait_for() -> None:
    """``asyncio.wait_for`` loses cancellations on 3.11; p2pdist waits through asyncio.timeout."""
    root = Path(p2pdist.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if name == "wait_for":
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
