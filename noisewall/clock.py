"""The one clock abstraction: everything that asks "what time is it" takes a Clock.

Censor policy windows, residual-blocking timers, probe schedules and
measurement timestamps read a :class:`Clock`, so the lab can replay months in
minutes with a simulated one. Sockets, throttling and timeouts stay on real
time (asyncio's own loop clock).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in POSIX seconds (UTC)."""

    def now(self) -> float:
        """The current time, seconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()


class ManualClock:
    """A clock that moves only when told to (tests, and the base of simulated time)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        """The time last set."""
        return self._now

    def set(self, when: float) -> None:
        """Jump to ``when``."""
        self._now = when

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock does not run backwards")
        self._now += seconds
