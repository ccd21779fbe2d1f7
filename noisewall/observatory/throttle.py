"""Which working transfers were throttled: the per-round "slow" indicator.

A round is slow when its throughput is at least ``drop_factor`` times below
the feature's own baseline (the median of its latest normal rounds) AND, when
the control path measured the same feature in the same round, at least
``drop_factor`` times below the control too. A slowdown the control path
shares is congestion, not censorship. Before the own baseline has enough
rounds, the control alone decides; with neither, the round counts as fine.
The control path itself is the reference and is not judged for throttling
(:func:`noisewall.observatory.detect.detect_series`).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from noisewall.observatory.config import ThrottleConfig


@dataclass(frozen=True, slots=True)
class SlowRounds:
    """Per round: the slow indicator (0/1) and whether a control measurement confirmed it."""

    slow: list[float]
    confirmed_by_control: list[bool]


def _control_rate(times: Sequence[float], rates: Sequence[float], when: float,
                  window: float) -> float | None:
    """The control's throughput nearest to ``when`` within ``window`` seconds."""
    i = bisect.bisect_left(times, when)
    best: float | None = None
    best_distance = window
    for j in (i - 1, i):
        if 0 <= j < len(times) and abs(times[j] - when) <= best_distance:
            best, best_distance = rates[j], abs(times[j] - when)
    return best


class _RunningMedian:
    """Median of the latest ``size`` values (kept sorted; sizes here are tens)."""

    def __init__(self, size: int) -> None:
        self._order: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, value: float) -> None:
        if len(self._order) == self._order.maxlen:
            del self._sorted[bisect.bisect_left(self._sorted, self._order[0])]
        self._order.append(value)
        bisect.insort(self._sorted, value)

    def median(self) -> float:
        n = len(self._sorted)
        mid = n // 2
        return self._sorted[mid] if n % 2 else (self._sorted[mid - 1] + self._sorted[mid]) / 2


def slow_rounds(times: Sequence[float], rates: Sequence[float], *,
                control_times: Sequence[float], control_rates: Sequence[float], window: float,
                config: ThrottleConfig) -> SlowRounds:
    """The slow indicator for each (time, throughput) of a series, time-ordered."""
    baseline = _RunningMedian(config.baseline_rounds)
    factor = config.drop_factor
    slow: list[float] = []
    confirmed: list[bool] = []
    for when, rate in zip(times, rates, strict=True):
        control = (_control_rate(control_times, control_rates, when, window)
                   if control_times else None)
        below_control = control is not None and rate * factor <= control
        if len(baseline) >= config.min_baseline_rounds:
            is_slow = rate * factor <= baseline.median() and (control is None or below_control)
        else:
            is_slow = below_control
        slow.append(1.0 if is_slow else 0.0)
        confirmed.append(is_slow and below_control)
        if not is_slow:
            baseline.add(rate)
    return SlowRounds(slow, confirmed)
