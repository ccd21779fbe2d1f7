"""Log lines under a budget: a flood of like events writes a few lines and a count.

A server under a connection flood must not fill the disk with one line per
connection (hundreds of MB a minute). :class:`RateLimitedLog` writes at most
``burst`` lines per ``period`` seconds for each kind of event, counts the
rest, and says how many it left out on the next line it writes for that kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Budget:
    window_start: float
    written: int = 0
    suppressed: int = 0


class RateLimitedLog:
    """``burst`` lines per ``period`` seconds per kind; ``clock`` is monotonic seconds."""

    def __init__(self, logger: logging.Logger, *, burst: int, period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._clock = clock
        self._budgets: dict[str, _Budget] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> bool:
        """Write ``message % args`` at ``level`` if ``kind`` has budget left; True if written."""
        now = self._clock()
        budget = self._budgets.get(kind)
        if budget is None or now - budget.window_start >= self._period:
            left_out = 0 if budget is None else budget.suppressed
            budget = self._budgets[kind] = _Budget(now)
            if left_out:
                message += " (%d similar lines left out in the last %.0f s)"
                args = (*args, left_out, self._period)
        if budget.written >= self._burst:
            budget.suppressed += 1
            return False
        budget.written += 1
        self._logger.log(level, message, *args)
        return True
