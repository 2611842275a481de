"""Per-address rate limits: a misbehaving client slows down only itself.

Each address may send ``burst`` requests at once and ``rate`` per second after that: a token
bucket, kept the GCRA way (generic cell rate algorithm) as one float per address, the time at
which its bucket would be full again. A request is allowed while that time is at most
``(burst - 1) / rate`` seconds ahead and then moves it ``1 / rate`` further; an idle address's
time falls behind the clock, which is the same as a full bucket. One dictionary read and write
per request, no tuple per request, 24 bytes per address.

The table is bounded: when it grows past ``max_addresses`` the idle addresses (full buckets) are
dropped, which loses nothing. Limits are per server process.
"""

from __future__ import annotations


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_addresses: int = 1_000_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self.max_addresses = max_addresses
        self._step = 1.0 / rate if rate > 0 else 0.0
        self._slack = (self.burst - 1) * self._step  # how far ahead of the clock an address may run
        self._full_at: dict[str, float] = {}  # address -> when its bucket is full again

    def allow(self, address: str, now: float) -> bool:
        """Count one request from ``address``; False when it is over its limit."""
        if self.rate <= 0:
            return True
        full_at = self._full_at.get(address)
        if full_at is None:
            if len(self._full_at) >= self.max_addresses:
                self.prune(now)
            full_at = now
        elif full_at < now:
            full_at = now
        elif full_at - now > self._slack:
            return False
        self._full_at[address] = full_at + self._step
        return True

    def retry_after(self, address: str, now: float) -> int:
        """Whole seconds (at least 1) until ``address`` may send again."""
        full_at = self._full_at.get(address)
        if self.rate <= 0 or full_at is None:
            return 1
        return max(1, int(full_at - self._slack - now + 0.999))

    def prune(self, now: float) -> None:
        idle = [address for address, full_at in self._full_at.items() if full_at <= now]
        for address in idle:
            del self._full_at[address]
        if len(self._full_at) >= self.max_addresses:
            self._full_at.clear()

    def __len__(self) -> int:
        return len(self._full_at)
