"""Is the package ready to run? The wrapper's conversation with the agent's control API.

ensure (fetches the torrent if needed, starts or continues the download, refreshes the
advertised lease) -> optionally poll status while the download progresses (``--wait``) -> verify
(every piece re-hashed from the files at their paths before anything runs from the cache; the
agent answers within a few seconds, ``checking`` while a long check goes on) -> lease (the agent
never removes or replaces a package while a process holds one). Any other answer -- incomplete,
still checking, damaged, agent down, tracker unreachable -- is a ``NotReady`` with a one-line
reason, and the wrapper exits with the retry code: SMS tries again later. Every call has a time
bound and so has the whole conversation (``ANSWER_TIMEOUT`` beyond ``--wait``): whatever the
agent does, SMS gets its answer within seconds.

The conversation is sequential, so it runs on blocking sockets: no event loop, and no asyncio to
import at every start (most of a wrapper's start-up, when SMS starts one on every PC at once);
nor typing or dataclasses (``p2pdist.records``), which cost a start more than the agent's answer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from p2pdist.errors import LocalError, P2pdistError, one_line
from p2pdist.records import Record

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from typing import Any, Protocol, TypeVar

    T = TypeVar("T")

    class AgentControl(Protocol):
        """The part of ``p2pdist.control.client.BlockingControlClient`` the wrapper uses;
        ``timeout`` bounds each call and the gate sets it before each one."""

        timeout: float

        def ensure(self, package_id: str, version: int | None = None) -> Any: ...

        def status(self, package_id: str) -> Any: ...

        def verify(self, package_id: str) -> Any: ...

        def acquire(self, package_id: str, pid: int) -> str: ...

        def release(self, lease: str) -> Any: ...

COMPLETE = "complete"
CHECKING = "checking"
NOT_PUBLISHED = "not-published"
QUICK_TIMEOUT = 5.0  # one control call
ANSWER_TIMEOUT = 10.0  # the whole conversation, beyond --wait
POLL_INTERVAL = 1.0
STALL_TIMEOUT = 60.0


class Ready(Record):
    """The package is complete, re-verified and leased to this process."""

    path: str
    lease: str
    status: Any


class NotReady(Record):
    """The command cannot run now; ``reason`` is one line for the log, ``progress`` 0..1 when
    known; ``unpublished_since`` (epoch seconds) when the package is not published, since when."""

    reason: str
    progress: float | None = None
    unpublished_since: float | None = None


class Unanswered(LocalError):
    """A control call failed: the agent is down, timed out or answered with an error."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")


class _OutOfTime(LocalError):
    """The whole conversation's bound passed."""


def _call(what: str, control: AgentControl, call: Callable[[], T], timeout: float, end: float | None = None) -> T:
    """``call()`` within ``timeout`` seconds, and before ``end`` (monotonic) when given."""
    if end is not None:
        timeout = min(timeout, end - time.monotonic())
        if timeout <= 0:
            raise _OutOfTime
    from p2pdist.control.schema import AgentTimeout

    control.timeout = timeout
    try:
        return call()
    except (AgentTimeout, TimeoutError):
        raise Unanswered(what, f"no answer from the agent within {timeout:g} s") from None
    except (P2pdistError, OSError) as exc:
        raise Unanswered(what, one_line(str(exc)) or type(exc).__name__) from None


def _size(size: object) -> str:
    if not isinstance(size, int) or size <= 0:
        return "unknown size"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def describe(status: Any) -> str:
    """One line about a PackageStatus: state, progress, size, peers and any error."""
    progress = getattr(status, "progress", None)
    parts = [str(getattr(status, "state", "unknown"))]
    if isinstance(progress, (int, float)):
        parts.append(f"{progress:.1%} of {_size(getattr(status, 'size', None))}")
    peers = getattr(status, "peers", None)
    if isinstance(peers, int):
        parts.append(f"{peers} peers")
    error, kind = getattr(status, "error", None), getattr(status, "error_kind", None)
    if error:
        parts.append(f"{kind or 'error'}: {one_line(str(error))}")
    tracker = getattr(status, "tracker_error", None)
    if tracker and tracker != error:
        parts.append(f"tracker error: {one_line(str(tracker))}")
    return ", ".join(parts)


def _progress(status: Any) -> float | None:
    value = getattr(status, "progress", None)
    return float(value) if isinstance(value, (int, float)) else None


def _since(status: Any) -> float:
    """When the agent first heard "not published" (now, if it does not say: an older agent)."""
    text = getattr(status, "unpublished_since", None)
    if isinstance(text, str):
        from datetime import datetime  # only on this path: the wrapper's start stays light

        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()


def _wrong_version(status: Any, version: int | None) -> str | None:
    have = getattr(status, "version", None)
    if version is not None and have is not None and have != version:
        return f"the agent has version {have}, the program asks for version {version}"
    return None


class Timing(Record):
    """Time bounds of the conversation; tests shorten them."""

    quick: float = QUICK_TIMEOUT
    answer: float = ANSWER_TIMEOUT
    poll: float = POLL_INTERVAL
    stall: float = STALL_TIMEOUT


def _fingerprint(status: Any) -> tuple[object, ...]:
    """What changes while a download makes progress."""
    return tuple(
        getattr(status, name, None) for name in ("state", "progress", "bytes_from_peers", "bytes_from_webseed")
    )


def wait_until_complete(
    control: AgentControl,
    package_id: str,
    status: Any,
    *,
    wait: float,
    timing: Timing,
    clock: Callable[[], float] = time.monotonic,
    verifying: bool = False,
    end: float | None = None,
) -> Any:
    """Poll for up to ``wait`` seconds while the download (or, ``verifying``, the check before
    the run) progresses; the last status seen. ``end``: the conversation's bound (monotonic).

    Stops early when the package completes, reports an error, or shows no progress for
    ``timing.stall`` seconds: waiting longer would only hold up SMS.
    """
    deadline = clock() + wait
    last, changed = _fingerprint(status), clock()
    max_polls = int(wait / max(timing.poll, 0.001)) + 2
    for _ in range(max_polls):
        state = getattr(status, "state", None)
        if state in (COMPLETE, "error") or (verifying and state != CHECKING):
            return status
        now = clock()
        if now >= deadline or now - changed >= timing.stall:
            return status
        time.sleep(min(timing.poll, deadline - now))
        if verifying:
            status = _call("verify", control, lambda: control.verify(package_id), timing.quick, end)
        else:
            status = _call("status", control, lambda: control.status(package_id), timing.quick, end)
        if (seen := _fingerprint(status)) != last:
            last, changed = seen, clock()
    return status


def prepare(
    control: AgentControl,
    package_id: str,
    *,
    pid: int,
    version: int | None = None,
    wait: float = 0.0,
    timing: Timing = Timing(),
) -> Ready | NotReady:
    """Ask the agent for the package and take a lease on it, or say why the command cannot run now.

    The whole conversation takes at most ``wait`` + ``timing.answer`` seconds.
    """
    clock = time.monotonic
    deadline = clock() + wait
    end = deadline + timing.answer
    try:
        status = _call("ensure", control, lambda: control.ensure(package_id, version), timing.quick, end)
        if getattr(status, "state", None) != COMPLETE and wait > 0:
            status = wait_until_complete(control, package_id, status, wait=wait, timing=timing, end=end)
        if getattr(status, "state", None) != COMPLETE:
            if getattr(status, "error_kind", None) == NOT_PUBLISHED:
                return NotReady(f"not published: {describe(status)}", _progress(status), _since(status))
            return NotReady(f"not complete: {describe(status)}", _progress(status))
        if problem := _wrong_version(status, version):
            return NotReady(problem, _progress(status))
        verified = _call("verify", control, lambda: control.verify(package_id), timing.quick, end)
        if getattr(verified, "state", None) == CHECKING and deadline > clock():
            verified = wait_until_complete(control, package_id, verified, wait=deadline - clock(), timing=timing, verifying=True, end=end)
        path = getattr(verified, "path", None)
        if getattr(verified, "state", None) == CHECKING:
            return NotReady(f"being checked before the run: {describe(verified)}", _progress(verified))
        if getattr(verified, "state", None) != COMPLETE or not path:
            return NotReady(f"failed re-verification, the agent repairs it: {describe(verified)}", _progress(verified))
        if problem := _wrong_version(verified, version):
            return NotReady(problem, _progress(verified))
        lease = _call("lease", control, lambda: control.acquire(package_id, pid), timing.quick, end)
    except Unanswered as exc:
        return NotReady(str(exc))
    except _OutOfTime:
        return NotReady(f"the agent did not finish answering within {wait + timing.answer:g} s")
    return Ready(str(path), str(lease), verified)


def release(control: AgentControl, lease: str, *, timing: Timing = Timing()) -> str | None:
    """Give the lease back; the problem as one line if that failed (the agent also ends it when we exit)."""
    try:
        _call("release", control, lambda: control.release(lease), timing.quick)
    except Unanswered as exc:
        return f"lease not released ({exc}); the agent ends it when this process exits"
    return None


@contextlib.contextmanager
def open_control(address: str | None, token_file: str | None, timeout: float) -> Iterator[AgentControl]:
    """A control-API client for one conversation.

    ``timeout`` is the client's own bound per request; the gate puts shorter bounds on the
    calls that must be quick.
    """
    from p2pdist.control.client import BlockingControlClient

    yield BlockingControlClient(address, token_file=token_file, timeout=timeout)
