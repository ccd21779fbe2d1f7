"""Bernoulli likelihoods over an indicator series: change-point dating, regime splits, scores.

The CUSUM says *that* a series changed; these maximum-likelihood helpers say
*where*: the onset is the split of a window into a part at the fine rate and
a part at its own estimated rate that explains the data best. All work on
prefix sums, so each call is linear in its window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import accumulate

_EPS = 1e-3


def prefix_sums(xs: Sequence[float]) -> list[float]:
    """``sums[i]`` = ``xs[0] + ... + xs[i-1]``."""
    return [0.0, *accumulate(xs)]


def log_likelihood(k: float, n: int, p: float | None = None) -> float:
    """Log-likelihood of ``k`` failures in ``n`` rounds at rate ``p`` (default: the MLE k/n)."""
    if n == 0:
        return 0.0
    rate = k / n if p is None else p
    rate = min(max(rate, _EPS), 1 - _EPS)
    return k * math.log(rate) + (n - k) * math.log(1 - rate)


def likelihood_ratio(k: float, n: int, p0: float) -> float:
    """Log-likelihood ratio of the MLE rate against ``p0`` for ``k`` failures in ``n`` rounds."""
    return log_likelihood(k, n) - log_likelihood(k, n, p0)


def date_change(sums: Sequence[float], lo: int, hi: int, *, before: float | None,
                after: float | None, first: int | None = None, last: int | None = None) -> int:
    """The index in ``[lo, hi]`` where the rate most likely changed.

    ``before`` / ``after`` fix the rate on either side (None: estimate it).
    The side before starts at ``first`` (default ``lo``) and the side after
    ends before ``last`` (default ``hi + 1``): an estimated rate then uses the
    whole episode, e.g. its onset when dating its end.
    """
    base = lo if first is None else first
    stop = hi + 1 if last is None else last
    best, best_score = lo, -math.inf
    for tau in range(lo, hi + 1):
        k1, n1 = sums[tau] - sums[base], tau - base
        k2, n2 = sums[stop] - sums[tau], stop - tau
        score = log_likelihood(k1, n1, before) + log_likelihood(k2, n2, after)
        if score > best_score:
            best, best_score = tau, score
    return best


def split_regimes(sums: Sequence[float], start: int, end: int, *, penalty: float,
                  min_length: int, kind: Callable[[float], str]) -> list[int]:
    """Boundaries ``[start, ..., end]`` cutting ``[start, end)`` into parts of different kinds.

    Binary segmentation: cut where two rates explain the part better than one
    by more than ``penalty`` (log-likelihood), only when the two sides are of a
    different ``kind`` (named from their failure fraction), and recurse.
    """
    n = end - start
    if n < 2 * min_length:
        return [start, end]
    k = sums[end] - sums[start]
    whole = log_likelihood(k, n)
    best, best_gain = -1, penalty
    for tau in range(start + min_length, end - min_length + 1):
        left, right = sums[tau] - sums[start], sums[end] - sums[tau]
        gain = (log_likelihood(left, tau - start) + log_likelihood(right, end - tau) - whole)
        if gain > best_gain and kind(left / (tau - start)) != kind(right / (end - tau)):
            best, best_gain = tau, gain
    if best < 0:
        return [start, end]
    head = split_regimes(sums, start, best, penalty=penalty, min_length=min_length, kind=kind)
    tail = split_regimes(sums, best, end, penalty=penalty, min_length=min_length, kind=kind)
    return head[:-1] + tail
