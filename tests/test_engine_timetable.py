"""The timetable runs callbacks when they are due, in order, on one loop timer.

All on the virtual clock (tests/support/virtual.py): the times asserted are the loop's own,
exactly, whatever the machine's speed. The property test holds the timetable to what it
replaces: for any schedule of waits and cancels, the same callbacks run at the same loop times
as with one ``loop.call_later`` each, in time order, ties in the order they were scheduled.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.engine.timetable import Due, Timetable
from tests.support.virtual import VirtualLoop, run_virtual


def test_callbacks_run_in_the_order_they_are_due_at_their_times() -> None:
    async def main(loop: VirtualLoop) -> list[tuple[str, float]]:
        timetable = Timetable()
        ran: list[tuple[str, float]] = []
        timetable.call_later(60.0, lambda: ran.append(("late", loop.time())))
        timetable.call_later(20.0, lambda: ran.append(("early", loop.time())))
        timetable.call_later(20.0, lambda: ran.append(("early, second", loop.time())))
        await asyncio.sleep(10.0)
        assert ran == []
        await asyncio.sleep(100.0)
        assert len(timetable) == 0
        return ran

    assert run_virtual(main) == [("early", 20.0), ("early, second", 20.0), ("late", 60.0)]


def test_a_cancelled_callback_never_runs_and_the_next_one_still_does() -> None:
    async def main(loop: VirtualLoop) -> list[str]:
        timetable = Timetable()
        ran: list[str] = []
        first = timetable.call_later(20.0, lambda: ran.append("cancelled"))
        timetable.call_later(40.0, lambda: ran.append("kept"))
        timetable.cancel(first)
        assert first.cancelled()
        await asyncio.sleep(100.0)
        return ran

    assert run_virtual(main) == ["kept"]


def test_a_thousand_waits_hold_one_loop_timer() -> None:
    async def main(loop: VirtualLoop) -> None:
        timetable = Timetable()
        ran: list[int] = []
        dues = [timetable.call_later(1800.0 + n, lambda n=n: ran.append(n)) for n in range(1000)]
        timetable.call_later(1.0, lambda: ran.append(-1))
        for due in dues[:900]:
            timetable.cancel(due)
        assert len(timetable) == 101
        live = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]  # asyncio's own timer heap, read to count timers
        assert len(live) == 1
        await asyncio.sleep(5.0)
        assert ran == [-1]
        handle = timetable._timer  # the one loop timer, for the earliest left
        assert handle is not None and handle.when() == 1800.0 + 900
        timetable.close()
        assert len(timetable) == 0 and timetable._timer is None

    run_virtual(main)


def test_what_a_callback_schedules_for_now_runs_on_a_later_turn() -> None:
    async def main(loop: VirtualLoop) -> list[str]:
        timetable = Timetable()
        ran: list[str] = []

        def again() -> None:
            ran.append("first")
            timetable.call_later(0.0, lambda: ran.append("then"))
            assert ran == ["first"]  # not run inside this callback

        timetable.call_later(0.0, again)
        await asyncio.sleep(1.0)
        return ran

    assert run_virtual(main) == ["first", "then"]


def test_a_failing_callback_is_reported_and_the_others_run() -> None:
    async def main(loop: VirtualLoop) -> tuple[list[str], list[BaseException]]:
        reported: list[BaseException] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
        timetable = Timetable()
        ran: list[str] = []
        timetable.call_later(1.0, lambda: 1 // 0)
        timetable.call_later(1.0, lambda: ran.append("after"))
        await asyncio.sleep(5.0)
        return ran, reported

    ran, reported = run_virtual(main)
    assert ran == ["after"]
    assert len(reported) == 1 and isinstance(reported[0], ZeroDivisionError)


# A step: at a virtual time offset from the last, schedule a wait of some delay, or cancel the
# n-th wait scheduled so far (modulo how many there are).
_steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 7.0]),
        st.one_of(st.tuples(st.just("wait"), st.sampled_from([0.0, 1.0, 2.5, 30.0, 1800.0])), st.tuples(st.just("cancel"), st.integers(0, 50))),
    ),
    max_size=40,
)


def _replay(steps: list[tuple[float, tuple[str, float]]], use_timetable: bool) -> list[tuple[int, float]]:
    """Which waits ran, at what loop time, in order: with the timetable or with loop timers."""

    async def main(loop: VirtualLoop) -> list[tuple[int, float]]:
        timetable = Timetable()
        ran: list[tuple[int, float]] = []
        handles: list[Due | asyncio.TimerHandle] = []
        for pause, (kind, value) in steps:
            if pause:
                await asyncio.sleep(pause)
            if kind == "wait":
                number = len(handles)
                record = lambda number=number: ran.append((number, loop.time()))  # noqa: E731
                handles.append(timetable.call_later(value, record) if use_timetable else loop.call_later(value, record))
            elif handles:
                handle = handles[int(value) % len(handles)]
                if isinstance(handle, Due):
                    timetable.cancel(handle)
                else:
                    handle.cancel()
        await asyncio.sleep(4000.0)
        timetable.close()
        return ran

    return run_virtual(main)


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_any_schedule_runs_as_loop_timers_would(steps: list[tuple[float, tuple[str, float]]]) -> None:
    ours = _replay(steps, use_timetable=True)
    # The same waits at the same times; among waits due at one time asyncio's heap keeps no
    # order, the timetable runs them in the order they were scheduled.
    assert ours == sorted(_replay(steps, use_timetable=False), key=lambda item: (item[1], item[0]))
