"""The slow indicator judged in stretches equals the round-by-round definition exactly."""

from __future__ import annotations

import bisect
import random
import statistics
from collections.abc import Sequence

import numpy as np
import pytest

from noisewall.observatory.config import ThrottleConfig
from noisewall.observatory.throttle import SlowRounds, slow_rounds


def _reference(times: Sequence[float], rates: Sequence[float], control_times: Sequence[float],
               control_rates: Sequence[float], window: float,
               config: ThrottleConfig) -> SlowRounds:
    """The definition, one round at a time (the detector's code before it was vectorised)."""
    normal: list[float] = []
    slow: list[float] = []
    confirmed: list[bool] = []
    for when, rate in zip(times, rates, strict=True):
        control = None
        i = bisect.bisect_left(control_times, when)
        best = window
        for j in (i - 1, i):
            if 0 <= j < len(control_times) and abs(control_times[j] - when) <= best:
                control, best = control_rates[j], abs(control_times[j] - when)
        below = control is not None and rate * config.drop_factor <= control
        baseline = normal[-config.baseline_rounds:]
        if len(baseline) >= config.min_baseline_rounds:
            is_slow = (rate * config.drop_factor <= statistics.median(baseline)
                       and (control is None or below))
        else:
            is_slow = below
        slow.append(1.0 if is_slow else 0.0)
        confirmed.append(is_slow and below)
        if not is_slow:
            normal.append(rate)
    return SlowRounds(np.asarray(slow, dtype=float), np.asarray(confirmed, dtype=bool))


def _series(rng: random.Random, rounds: int) -> tuple[list[float], list[float]]:
    times = [60.0 * i for i in range(rounds) if rng.random() > 0.05]
    rates = []
    throttled_until = -1
    for i, _ in enumerate(times):
        if rng.random() < (0.2 if i < 10 else 0.01):
            throttled_until = i + rng.choice([1, 3, 15, 80, 400])
        if i < throttled_until:
            rates.append(rng.choice([128.0, 130.0, 1e-3]) * rng.uniform(0.9, 1.1))
        else:
            rates.append(4000.0 * rng.lognormvariate(0, rng.choice([0.2, 0.8])))
    return times, rates


@pytest.mark.parametrize("seed", range(40))
def test_stretches_agree_with_the_round_by_round_definition(seed: int) -> None:
    rng = random.Random(seed)
    times, rates = _series(rng, rng.choice([0, 3, 12, 30, 600, 3000]))
    with_control = seed % 3 != 0
    # offsets of +-30 s put two control rounds at the same distance (a tie) from a round
    control_times = [t + offset for t in times for offset in rng.sample([-30.0, 0.0, 30.0], 2)
                     if with_control and rng.random() > 0.2]
    control_times.sort()
    control_rates = [4000.0 * rng.lognormvariate(0, 0.5) for _ in control_times]
    baseline = rng.choice([1, 4, 20])
    config = ThrottleConfig(baseline_rounds=baseline,
                            min_baseline_rounds=rng.randint(1, baseline),
                            drop_factor=rng.choice([2.0, 5.0]))
    got = slow_rounds(np.asarray(times, dtype=float), np.asarray(rates, dtype=float),
                      control_times=np.asarray(control_times, dtype=float),
                      control_rates=np.asarray(control_rates, dtype=float),
                      window=30.0, config=config)
    want = _reference(times, rates, control_times, control_rates, 30.0, config)
    assert got.slow.tolist() == want.slow.tolist()
    assert got.confirmed_by_control.tolist() == want.confirmed_by_control.tolist()
    if len(times) > 600:
        assert 0 < got.slow.sum() < len(times)  # the series hold episodes and normal rounds
