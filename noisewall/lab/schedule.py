"""The simulated-clock schedule: one probe round every ``interval`` simulated seconds.

The lab owns one :class:`~noisewall.clock.ManualClock` (the simulated clock).
Before each round it sets that clock to the round's simulated time; the
censor's policy windows and residual timers, the probes' measurement
timestamps and the observatory all read it, so months replay in minutes while
sockets, throttling and timeouts stay on real time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from noisewall.clock import ManualClock

__all__ = ["Round", "Schedule"]


@dataclass(frozen=True, slots=True)
class Round:
    """One probe round: its index (from 0) and simulated time (POSIX seconds)."""

    index: int
    time: float


@dataclass(frozen=True, slots=True)
class Schedule:
    """Rounds at ``start``, ``start + interval``, ... strictly before ``end``."""

    start: float
    end: float
    interval: float

    def __post_init__(self) -> None:
        if not self.interval > 0 or not self.end > self.start:
            raise ValueError("a schedule needs end > start and a positive interval")

    def __len__(self) -> int:
        return math.ceil((self.end - self.start) / self.interval)

    def __iter__(self) -> Iterator[Round]:
        for index in range(len(self)):
            yield Round(index, self.time_of(index))

    def time_of(self, index: int) -> float:
        """The simulated time of round ``index``."""
        return self.start + index * self.interval

    def first_round_at_or_after(self, when: float) -> int:
        """The index of the first round at or after ``when`` (may be ``len(self)``)."""
        if when <= self.start:
            return 0
        return min(len(self), math.ceil((when - self.start) / self.interval - 1e-9))

    def run(self, clock: ManualClock) -> Iterator[Round]:
        """Each round in turn, with ``clock`` set to its simulated time first."""
        for round_ in self:
            clock.set(round_.time)
            yield round_
