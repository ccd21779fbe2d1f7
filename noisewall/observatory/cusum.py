"""Two-sided CUSUM over a per-round indicator, as in OONI's production detector.

The indicator is 1 for a failed (or throttled) round and 0 for a fine one.
In the ``ok`` state the upper sum ``S+ = max(0, S+ + x - mu0 - v/2)`` looks
for a rise to ``mu1``; once it passes ``h = edd * v / 2`` the series is in the
``changed`` state and the lower sum ``S- = max(0, S- + mu1 - x - v/2)`` looks
for the way back, against its own (higher) threshold. With ``v = mu1 - mu0``
a series sitting at ``mu1`` raises ``S+`` by ``v/2`` per round, so ``edd`` is
the expected detection delay in rounds. After a gap of more than ``gap`` seconds both sums decay by
``0.5 ** (gap / half_life)`` (OONI: 24 h gap, 48 h half-life).

Pure functions over NumPy arrays; no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noisewall.observatory.store_types import Floats


@dataclass(frozen=True, slots=True)
class CusumParams:
    """mu0, mu1, the thresholds h for onsets and ends, and the gap decay in seconds."""

    mu0: float
    mu1: float
    threshold: float
    end_threshold: float
    gap: float
    half_life: float


@dataclass(frozen=True, slots=True)
class Alarm:
    """A state change: the sum first left zero at ``start`` and crossed h at ``alarm``."""

    start: int
    alarm: int


@dataclass(frozen=True, slots=True)
class Episode:
    """The indices of one changed stretch: its onset alarm and, if it ended, its end alarm."""

    onset: Alarm
    end: Alarm | None


def cusum_episodes(xs: Floats, times: Floats, params: CusumParams) -> list[Episode]:
    """Run the two-sided CUSUM over ``xs`` (time-ordered) and return the changed episodes."""
    half_v = (params.mu1 - params.mu0) / 2
    episodes: list[Episode] = []
    changed = False
    total = 0.0
    start = -1
    onset: Alarm | None = None
    previous = float(times[0]) if len(times) else 0.0
    # From a sum of 0 only a round that raises it can change anything: in the ok state the
    # next bad round, in the changed state the next good one. Skip to it (a gap's decay
    # does nothing to a zero sum), so the loop only walks the rounds of an excursion.
    raises = (np.flatnonzero((xs - params.mu0) - half_v > 0),
              np.flatnonzero((params.mu1 - xs) - half_v > 0))
    i = 0
    while i < len(xs):
        if total == 0.0:
            candidates = raises[changed]
            found = int(np.searchsorted(candidates, i))
            if found == len(candidates):
                break
            if candidates[found] > i:
                i = int(candidates[found])
                previous = float(times[i - 1])
        x = float(xs[i])
        now = float(times[i])
        gap = now - previous
        previous = now
        if gap > params.gap and total > 0:
            total *= 0.5 ** (gap / params.half_life)
        step = (params.mu1 - x if changed else x - params.mu0) - half_v
        total += step
        i += 1
        if total <= 0:
            total = 0.0
            start = -1
            continue
        if start < 0:
            start = i - 1
        if total > (params.end_threshold if changed else params.threshold):
            alarm = Alarm(start, i - 1)
            if changed:
                assert onset is not None
                episodes.append(Episode(onset, alarm))
                onset = None
            else:
                onset = alarm
            changed = not changed
            total = 0.0
            start = -1
    if onset is not None:
        episodes.append(Episode(onset, None))
    return episodes
