"""Token buckets and rate meters with an injected clock (so tests need no sleeping).

A bucket with rate 0 is unlimited. The engine charges uploads before writing a block and
downloads after reading bytes; a negative balance means "wait ``delay()`` seconds".
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp")

    def __init__(self, rate: float, *, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 64 * 1024)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    @classmethod
    def of(cls, rate: float, *, clock: Callable[[], float] = time.monotonic) -> TokenBucket:
        """A bucket for ``rate``; every unlimited one is the same object (it never changes, and
        never reads its clock), so a thousand torrents without a limit of their own share one."""
        return cls(rate, clock=clock) if rate > 0 else UNLIMITED

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def charge(self, amount: int) -> None:
        if self.unlimited:
            return
        self._refill()
        self._tokens -= amount

    def delay(self) -> float:
        """Seconds until the balance is positive again (0 when it already is)."""
        if self.unlimited:
            return 0.0
        self._refill()
        return 0.0 if self._tokens > 0 else -self._tokens / self.rate


UNLIMITED = TokenBucket(0)


class Throttle:
    """Two buckets that both must allow a transfer: the session's shared limit and a torrent's
    own. ``limited`` is read per 16 KiB block, so it is two attribute checks, not a loop."""

    __slots__ = ("shared", "own")

    def __init__(self, shared: TokenBucket, own: TokenBucket) -> None:
        self.shared = shared
        self.own = own

    @property
    def limited(self) -> bool:
        return self.shared.rate > 0 or self.own.rate > 0

    def charge(self, amount: int) -> None:
        self.shared.charge(amount)
        self.own.charge(amount)

    def delay(self) -> float:
        return max(self.shared.delay(), self.own.delay())

    def blocks_per_write(self, most: int, block: int) -> int:
        """How many ``block``-byte blocks one write may carry: ``most``, or about a second of the
        tighter limit (at least one block). A slow limit then sends a little every second
        instead of a whole batch every half minute, which the peer would take for a stall."""
        if not self.limited:
            return most
        rate = min(rate for rate in (self.shared.rate, self.own.rate) if rate > 0)
        return max(1, min(most, int(rate) // block))


class RateMeter:
    """Bytes per second, smoothed over a few seconds (what the choker and the UI read).

    The hot path adds to ``total`` directly (an attribute, not a call, per 16 KiB block);
    ``update`` turns the growth of ``total`` since the last update into a rate.
    """

    __slots__ = ("_clock", "_window", "_stamp", "_counted", "total", "rate")

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = 5.0) -> None:
        self._clock = clock
        self._window = window
        self._stamp = clock()
        self._counted = 0
        self.total = 0
        self.rate = 0.0

    def add(self, amount: int) -> None:
        self.total += amount

    def settle(self) -> None:
        """Nothing moves now: the rate is 0 and the bytes so far are counted."""
        self._counted = self.total
        self._stamp = self._clock()
        self.rate = 0.0

    def update(self) -> float:
        now = self._clock()
        elapsed = now - self._stamp
        if elapsed <= 0:
            return self.rate
        instant = (self.total - self._counted) / elapsed
        weight = min(1.0, elapsed / self._window)
        self.rate += (instant - self.rate) * weight
        self._counted = self.total
        self._stamp = now
        return self.rate
