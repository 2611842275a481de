"""The timetable runs callbacks when they are due, in order, on one loop timer."""

from __future__ import annotations

import asyncio

from p2pdist.engine.timetable import Timetable


async def test_callbacks_run_in_the_order_they_are_due() -> None:
    timetable = Timetable()
    ran: list[str] = []
    timetable.call_later(0.06, lambda: ran.append("late"))
    timetable.call_later(0.02, lambda: ran.append("early"))
    timetable.call_later(0.02, lambda: ran.append("early, second"))
    await asyncio.sleep(0.01)
    assert ran == []
    await asyncio.sleep(0.1)
    assert ran == ["early", "early, second", "late"]
    assert len(timetable) == 0


async def test_a_cancelled_callback_never_runs_and_the_next_one_still_does() -> None:
    timetable = Timetable()
    ran: list[str] = []
    first = timetable.call_later(0.02, lambda: ran.append("cancelled"))
    timetable.call_later(0.04, lambda: ran.append("kept"))
    timetable.cancel(first)
    assert first.cancelled()
    await asyncio.sleep(0.1)
    assert ran == ["kept"]


async def test_a_thousand_waits_hold_one_loop_timer() -> None:
    timetable = Timetable()
    loop = asyncio.get_running_loop()
    ran: list[int] = []
    dues = [timetable.call_later(1800.0 + n, lambda n=n: ran.append(n)) for n in range(1000)]
    timetable.call_later(0.01, lambda: ran.append(-1))
    for due in dues[:900]:
        timetable.cancel(due)
    assert len(timetable) == 101
    await asyncio.sleep(0.05)
    assert ran == [-1]
    handle = timetable._timer  # the one loop timer, for the earliest left
    assert handle is not None and abs(handle.when() - (loop.time() + 2700.0)) < 5.0
    timetable.close()
    assert len(timetable) == 0 and timetable._timer is None


async def test_what_a_callback_schedules_for_now_runs_on_a_later_turn() -> None:
    timetable = Timetable()
    ran: list[str] = []

    def again() -> None:
        ran.append("first")
        timetable.call_later(0.0, lambda: ran.append("then"))

    timetable.call_later(0.0, again)
    await asyncio.sleep(0.05)
    assert ran == ["first", "then"]


async def test_a_failing_callback_is_reported_and_the_others_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    try:
        timetable = Timetable()
        ran: list[str] = []
        timetable.call_later(0.01, lambda: 1 // 0)
        timetable.call_later(0.01, lambda: ran.append("after"))
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert ran == ["after"]
    assert len(reported) == 1 and isinstance(reported[0], ZeroDivisionError)
