"""Per-address token buckets: a misbehaving client slows down only itself.

Each address gets ``burst`` tokens refilled at ``rate`` per second; one request costs one.
The table is bounded: when it grows past ``max_addresses`` the entries whose buckets are full
again (idle clients) are dropped, which loses nothing. Limits are per server process.
"""

from __future__ import annotations


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_addresses: int = 1_000_000) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, last update)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, address: str, now: float) -> bool:
        """Take one token for ``address``; False when its bucket is empty."""
        if self.rate <= 0:
            return True
        tokens, last = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        if address not in self._buckets and len(self._buckets) >= self.max_addresses:
            self.prune(now)
        self._buckets[address] = (tokens - 1.0, now)
        return True

    def retry_after(self, address: str) -> int:
        """Whole seconds until ``address`` has a token again."""
        tokens, _ = self._buckets.get(address, (self.burst, 0.0))
        return max(1, int((1.0 - tokens) / self.rate + 0.999)) if self.rate > 0 else 0

    def prune(self, now: float) -> None:
        full = [a for a, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for address in full:
            del self._buckets[address]
        if len(self._buckets) >= self.max_addresses:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
