"""Which working transfers were throttled: the per-round "slow" indicator.

A round is slow when its throughput is at least ``drop_factor`` times below
the feature's own baseline (the median of its latest normal rounds) AND, when
the control path measured the same feature in the same round, at least
``drop_factor`` times below the control too. A slowdown the control path
shares is congestion, not censorship. Before the own baseline has enough
rounds, the control alone decides; with neither, the round counts as fine.
The control path itself is the reference and is not judged for throttling
(:func:`noisewall.observatory.episodes.detect_series`).

The baseline holds only normal rounds, so each round's verdict depends on the
verdicts before it. Most rounds are normal, and a run of normal rounds is
judged at once: every round of a stretch is judged as if the ones before it
in the stretch were normal (a rolling median, vectorised) up to the first
slow one, which is exact because those before it were. Right after a slow
round, rounds are judged one at a time until the series is back to normal.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from noisewall.observatory.config import ThrottleConfig
from noisewall.observatory.store_types import Flags, Floats

_FIRST_STRETCH = 64
_LONGEST_STRETCH = 1 << 16
#: Normal rounds judged one at a time after a slow one before stretches resume.
_SETTLE_ROUNDS = 8


@dataclass(frozen=True, slots=True)
class SlowRounds:
    """Per round: the slow indicator (0/1) and whether a control measurement confirmed it."""

    slow: Floats
    confirmed_by_control: Flags


def nearest_control(times: Floats, control_times: Floats, control_rates: Floats,
                    window: float) -> Floats:
    """Per time: the control's throughput nearest to it within ``window`` s, NaN if none.

    On a tie the later control measurement counts.
    """
    found = np.full(len(times), np.nan)
    if len(control_times) == 0:
        return found
    after = np.searchsorted(control_times, times, side="left")
    before = after - 1
    has_before = before >= 0
    has_after = after < len(control_times)
    gap_before = np.where(has_before, np.abs(control_times[np.maximum(before, 0)] - times), np.inf)
    gap_after = np.where(has_after,
                         np.abs(control_times[np.minimum(after, len(control_times) - 1)] - times),
                         np.inf)
    use_before = has_before & (gap_before <= window)
    use_after = has_after & (gap_after <= np.where(use_before, gap_before, window))
    found[use_before] = control_rates[before[use_before]]
    found[use_after] = control_rates[after[use_after]]
    return found


class _Judge:
    """The verdicts of one series, the baseline's normal rates so far, and the rules."""

    def __init__(self, rates: Floats, control: Floats, config: ThrottleConfig) -> None:
        self.rates = rates
        self.config = config
        scaled = rates * config.drop_factor
        self.scaled = scaled
        self.below_control: Flags = scaled <= control  # NaN (no control) compares False
        self.no_control: Flags = np.isnan(control)
        self.slow = np.zeros(len(rates), dtype=bool)
        #: The latest normal rates (the baseline's window), and how many normal rounds so far.
        self.normal: deque[float] = deque(maxlen=config.baseline_rounds)
        self.seen = 0

    def one(self, i: int) -> bool:
        """Judge round ``i`` alone; True when it is slow."""
        below = bool(self.below_control[i])
        if len(self.normal) >= self.config.min_baseline_rounds:
            is_slow = (bool(self.scaled[i] <= statistics.median(self.normal))
                       and (bool(self.no_control[i]) or below))
        else:
            is_slow = below
        self._record(i, is_slow)
        return is_slow

    def stretch(self, start: int, stop: int) -> int:
        """Judge ``[start, stop)`` at once up to its first slow round; returns where it stopped."""
        size = self.config.baseline_rounds
        tail = np.asarray(self.normal, dtype=float)
        stream = np.concatenate([tail, self.rates[start:stop]])
        ends = np.arange(len(tail), len(tail) + stop - start)  # baseline = stream[..ends)
        counts = np.minimum(size, self.seen + np.arange(stop - start))
        span = slice(start, stop)
        trusted = counts >= self.config.min_baseline_rounds
        # A median is at most its window's maximum: only a round at or below that can be
        # slow by its own baseline, and only those rounds need the median (few, usually).
        last = np.maximum(ends - 1, 0)
        highest = pd.Series(stream).rolling(size, min_periods=1).max().to_numpy()[last]
        candidates = np.flatnonzero(trusted & (self.scaled[span] <= highest))
        if len(candidates) <= max(_FIRST_STRETCH, (stop - start) // 16):
            baseline = np.full(stop - start, np.nan)
            for j in candidates.tolist():
                end = int(ends[j])
                baseline[j] = statistics.median(stream[max(0, end - size):end].tolist())
        else:
            rolling = pd.Series(stream).rolling(size).median().to_numpy()
            # Fewer than ``size`` normal rounds so far: the median of all of them.
            expanding = np.full(len(stream), np.nan)
            expanding[:size] = pd.Series(stream[:size]).expanding().median().to_numpy()
            baseline = np.where(ends >= size, rolling[last], expanding[last])
        own = (self.scaled[span] <= baseline) & (self.no_control[span] | self.below_control[span])
        verdict = np.where(trusted, own, self.below_control[span])
        first = int(np.argmax(verdict)) if verdict.any() else stop - start
        self.normal.extend(self.rates[max(start, start + first - size):start + first].tolist())
        self.seen += first
        if first < stop - start:
            self._record(start + first, True)
            return start + first + 1
        return stop

    def _record(self, i: int, is_slow: bool) -> None:
        if is_slow:
            self.slow[i] = True
        else:
            self.normal.append(float(self.rates[i]))
            self.seen += 1


def slow_rounds(times: Floats, rates: Floats, *, control_times: Floats, control_rates: Floats,
                window: float, config: ThrottleConfig) -> SlowRounds:
    """The slow indicator for each (time, throughput) of a series, time-ordered."""
    rate = np.asarray(rates, dtype=float)
    control = nearest_control(np.asarray(times, dtype=float),
                              np.asarray(control_times, dtype=float),
                              np.asarray(control_rates, dtype=float), window)
    judge = _Judge(rate, control, config)
    i, stretch = 0, _FIRST_STRETCH
    while i < len(rate):
        stop = judge.stretch(i, min(len(rate), i + stretch))
        if stop == min(len(rate), i + stretch) and not judge.slow[stop - 1]:
            i, stretch = stop, min(stretch * 2, _LONGEST_STRETCH)
            continue
        i, stretch, settled = stop, _FIRST_STRETCH, 0
        while i < len(rate) and settled < _SETTLE_ROUNDS:  # inside an episode: one by one
            settled = 0 if judge.one(i) else settled + 1
            i += 1
    slow = judge.slow
    confirmed = slow & judge.below_control
    return SlowRounds(slow.astype(float), confirmed)
