"""The CUSUM that skips quiet rounds finds exactly the episodes of the round-by-round loop."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from noisewall.observatory.cusum import Alarm, CusumParams, Episode, cusum_episodes


def _reference(xs: Sequence[float], times: Sequence[float],
               params: CusumParams) -> list[Episode]:
    """Every round in turn (the detector's loop before quiet rounds were skipped)."""
    half_v = (params.mu1 - params.mu0) / 2
    episodes: list[Episode] = []
    changed, total, start = False, 0.0, -1
    onset: Alarm | None = None
    previous = times[0] if times else 0.0
    for i, x in enumerate(xs):
        gap = times[i] - previous
        previous = times[i]
        if gap > params.gap and total > 0:
            total *= 0.5 ** (gap / params.half_life)
        total += (params.mu1 - x if changed else x - params.mu0) - half_v
        if total <= 0:
            total, start = 0.0, -1
            continue
        if start < 0:
            start = i
        if total > (params.end_threshold if changed else params.threshold):
            alarm = Alarm(start, i)
            if changed:
                assert onset is not None
                episodes.append(Episode(onset, alarm))
                onset = None
            else:
                onset = alarm
            changed, total, start = not changed, 0.0, -1
    if onset is not None:
        episodes.append(Episode(onset, None))
    return episodes


@pytest.mark.parametrize("seed", range(30))
def test_skipping_quiet_rounds_changes_nothing(seed: int) -> None:
    rng = random.Random(seed)
    rounds = rng.choice([0, 1, 5, 50, 2000])
    times, xs, now = [], [], 0.0
    rate = 0.003
    for _ in range(rounds):
        now += 60.0 * (rng.choice([30, 100]) if rng.random() < 0.01 else 1)
        if rng.random() < 0.01:
            rate = rng.choice([0.003, 0.5, 1.0])
        times.append(now)
        # now and then a value on the sums' thresholds (mu0 + v/2 or mu1 - v/2 with mu0 = 0)
        odd = rng.random() < 0.03
        xs.append(rng.choice([0.35, 0.5]) if odd else 1.0 if rng.random() < rate else 0.0)
    mu0 = rng.choice([0.0, 0.1])
    params = CusumParams(mu0=mu0, mu1=0.7, threshold=rng.choice([0.5, 1.75]),
                         end_threshold=3.5, gap=24 * 60.0, half_life=48 * 60.0)
    assert cusum_episodes(np.asarray(xs), np.asarray(times), params) == _reference(
        xs, times, params)
