"""Traffic shaping primitives for the censor's actions (sans-IO: time is passed in)."""

from __future__ import annotations


class TokenBucket:
    """A token bucket in bytes: ``rate`` bytes/s sustained, ``burst`` bytes at most at once.

    :meth:`reserve` takes tokens for ``size`` bytes (going into debt if
    needed) and says how long to wait before sending them, so a sender that
    waits as told never exceeds ``rate`` over any interval longer than
    ``burst / rate`` seconds.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = now

    def reserve(self, size: int, now: float) -> float:
        """Take ``size`` bytes' worth of tokens; return the seconds to wait before sending."""
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def kbit_to_bytes(rate_kbps: float) -> float:
    """kbit/s (1000 bits) to bytes/s."""
    return rate_kbps * 1000 / 8
