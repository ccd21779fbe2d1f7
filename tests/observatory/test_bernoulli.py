"""Vectorised change-point dating, segmentation and failure naming equal the scalar code."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from noisewall.observatory.bernoulli import date_change, log_likelihood, split_regimes
from noisewall.observatory.episodes import _most_common
from noisewall.observatory.store_types import Flags, Floats


def _date_reference(sums: Sequence[float], lo: int, hi: int, *, before: float | None,
                    after: float | None, first: int | None, last: int | None) -> int:
    """Every split in turn (the detector's loop before it was vectorised)."""
    base = lo if first is None else first
    stop = hi + 1 if last is None else last
    best, best_score = lo, -math.inf
    for tau in range(lo, hi + 1):
        score = (log_likelihood(sums[tau] - sums[base], tau - base, before)
                 + log_likelihood(sums[stop] - sums[tau], stop - tau, after))
        if score > best_score:
            best, best_score = tau, score
    return best


def _split_reference(sums: Sequence[float], start: int, end: int, penalty: float,
                     min_length: int, kind: Callable[[float], bool]) -> list[int]:
    n = end - start
    if n < 2 * min_length:
        return [start, end]
    whole = log_likelihood(sums[end] - sums[start], n)
    best, best_gain = -1, penalty
    for tau in range(start + min_length, end - min_length + 1):
        left, right = sums[tau] - sums[start], sums[end] - sums[tau]
        gain = log_likelihood(left, tau - start) + log_likelihood(right, end - tau) - whole
        if gain > best_gain and kind(left / (tau - start)) != kind(right / (end - tau)):
            best, best_gain = tau, gain
    if best < 0:
        return [start, end]
    return (_split_reference(sums, start, best, penalty, min_length, kind)[:-1]
            + _split_reference(sums, best, end, penalty, min_length, kind))


def _indicator(rng: random.Random) -> list[float]:
    """Regimes of different failure rates, some long and flat (many tied splits)."""
    xs: list[float] = []
    for _ in range(rng.randint(1, 6)):
        rate = rng.choice([0.0, 0.003, 0.3, 0.5, 0.9, 1.0])
        xs.extend(1.0 if rng.random() < rate else 0.0 for _ in range(rng.choice([1, 7, 60, 900])))
    return xs


@pytest.mark.parametrize("seed", range(60))
def test_vectorised_equals_scalar(seed: int) -> None:
    rng = random.Random(seed)
    xs = _indicator(rng)
    sums = [0.0]
    for x in xs:
        sums.append(sums[-1] + x)
    array: Floats = np.asarray(sums)
    n = len(xs)
    for _ in range(20):
        lo = rng.randint(0, n - 1)
        hi = rng.randint(lo, n - 1)
        first = rng.choice([None, rng.randint(0, lo)])
        last = rng.choice([None, rng.randint(hi + 1, n)])
        before = rng.choice([None, 0.01, 0.5])
        after = rng.choice([None, 0.01])
        assert date_change(array, lo, hi, before=before, after=after, first=first,
                           last=last) == _date_reference(sums, lo, hi, before=before,
                                                         after=after, first=first, last=last)
    limit = rng.choice([0.1, 0.4])

    def kinds(fractions: Floats) -> Flags:
        flags: Flags = 1 - fractions <= limit
        return flags

    start = rng.randint(0, n - 1)
    end = rng.randint(start + 1, n)
    penalty = rng.choice([0.0, 8.0])
    min_length = rng.choice([1, 5])
    assert split_regimes(array, start, end, penalty=penalty, min_length=min_length,
                         kind=kinds) == _split_reference(sums, start, end, penalty, min_length,
                                                         lambda f: 1 - f <= limit)


@pytest.mark.parametrize("seed", range(20))
def test_most_common_failure_is_counters(seed: int) -> None:
    """The event's failure: the most frequent, on a tie the first seen (as Counter names it)."""
    rng = random.Random(seed)
    codes = [rng.choice([-1, -1, 0, 1, 2, 3]) for _ in range(rng.choice([0, 1, 6, 40]))]
    counted = Counter(c for c in codes if c >= 0)
    expected = counted.most_common(1)[0][0] if counted else -1
    assert _most_common(np.asarray(codes, dtype=np.int32)) == expected
