"""Bernoulli likelihoods over an indicator series: change-point dating, regime splits, scores.

The CUSUM says *that* a series changed; these maximum-likelihood helpers say
*where*: the onset is the split of a window into a part at the fine rate and
a part at its own estimated rate that explains the data best. All work on
prefix sums, so each call is linear in its window.

Every split of a window is scored at once with NumPy. NumPy's logarithm may
differ from :func:`math.log` in the last bit, so the vectorised scores only
pick the candidates: the few splits within a hair of the best are scored
again with :func:`log_likelihood` and chosen by the scalar rule (the first
best), so the result is exactly the scalar scan's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from noisewall.observatory.store_types import Floats

_EPS = 1e-3
#: Relative error the vectorised scores may carry against the scalar ones (far above NumPy's).
_SLACK = 1e-9
Ints = npt.NDArray[np.int64]


def prefix_sums(xs: Floats) -> Floats:
    """``sums[i]`` = ``xs[0] + ... + xs[i-1]``."""
    return np.concatenate(([0.0], np.cumsum(xs, dtype=np.float64)))


def log_likelihood(k: float, n: int, p: float | None = None) -> float:
    """Log-likelihood of ``k`` failures in ``n`` rounds at rate ``p`` (default: the MLE k/n)."""
    if n == 0:
        return 0.0
    rate = k / n if p is None else p
    rate = min(max(rate, _EPS), 1 - _EPS)
    return k * math.log(rate) + (n - k) * math.log(1 - rate)


def _log_likelihoods(k: Floats, n: Ints, p: float | None) -> Floats:
    """:func:`log_likelihood` of each (k, n), to within a few ulps."""
    safe = np.maximum(n, 1)
    rate = np.clip(k / safe if p is None else np.full(len(k), p), _EPS, 1 - _EPS)
    found: Floats = np.where(n == 0, 0.0, k * np.log(rate) + (n - k) * np.log(1 - rate))
    return found


def likelihood_ratio(k: float, n: int, p0: float) -> float:
    """Log-likelihood ratio of the MLE rate against ``p0`` for ``k`` failures in ``n`` rounds."""
    return log_likelihood(k, n) - log_likelihood(k, n, p0)


def _first_best(approx: Floats, scale: float, exact: Callable[[int], float],
                floor: float) -> int:
    """The first ``i`` with the highest ``exact(i)`` above ``floor``, -1 if none.

    ``approx[i]`` is ``exact(i)`` to within :data:`_SLACK` times ``scale``:
    only the positions that close to the best are scored exactly.
    """
    if len(approx) == 0:
        return -1
    top = float(np.max(approx))
    slack = _SLACK * (1.0 + scale)
    if top + slack <= floor:
        return -1
    best, best_score = -1, floor
    for i in np.flatnonzero(approx >= top - slack).tolist():
        score = exact(i)
        if score > best_score:
            best, best_score = i, score
    return best


def date_change(sums: Floats, lo: int, hi: int, *, before: float | None,
                after: float | None, first: int | None = None, last: int | None = None) -> int:
    """The index in ``[lo, hi]`` where the rate most likely changed.

    ``before`` / ``after`` fix the rate on either side (None: estimate it).
    The side before starts at ``first`` (default ``lo``) and the side after
    ends before ``last`` (default ``hi + 1``): an estimated rate then uses the
    whole episode, e.g. its onset when dating its end. On a tie the earliest
    index wins.
    """
    base = lo if first is None else first
    stop = hi + 1 if last is None else last
    taus = np.arange(lo, hi + 1)
    head, tail = sums[taus] - sums[base], sums[stop] - sums[taus]
    scores = _log_likelihoods(head, taus - base, before) + _log_likelihoods(
        tail, stop - taus, after)

    def exact(i: int) -> float:
        tau = lo + i
        return (log_likelihood(float(sums[tau] - sums[base]), tau - base, before)
                + log_likelihood(float(sums[stop] - sums[tau]), stop - tau, after))

    # Each score is a sum of non-positive terms: its own size bounds the rounding.
    best = _first_best(scores, float(np.max(np.abs(scores), initial=0.0)), exact, -math.inf)
    return lo + max(best, 0)


def split_regimes(sums: Floats, start: int, end: int, *, penalty: float, min_length: int,
                  kind: Callable[[Floats], npt.NDArray[np.bool_]]) -> list[int]:
    """Boundaries ``[start, ..., end]`` cutting ``[start, end)`` into parts of different kinds.

    Binary segmentation: cut where two rates explain the part better than one
    by more than ``penalty`` (log-likelihood), only when the two sides are of a
    different ``kind`` (a flag named from their failure fractions, given an
    array of them), and recurse. On a tie the earliest cut wins.
    """
    n = end - start
    if n < 2 * min_length:
        return [start, end]
    k = float(sums[end] - sums[start])
    whole = log_likelihood(k, n)
    taus = np.arange(start + min_length, end - min_length + 1)
    left, right = sums[taus] - sums[start], sums[end] - sums[taus]
    differ = kind(left / (taus - start)) != kind(right / (end - taus))
    cuts = taus[differ]
    gains = (_log_likelihoods(left[differ], cuts - start, None)
             + _log_likelihoods(right[differ], end - cuts, None) - whole)

    def exact(i: int) -> float:
        tau = int(cuts[i])
        return (log_likelihood(float(sums[tau] - sums[start]), tau - start)
                + log_likelihood(float(sums[end] - sums[tau]), end - tau) - whole)

    # The two sides' likelihoods lie between ``whole`` and 0: ``whole`` bounds the rounding.
    best = _first_best(gains, abs(whole), exact, penalty)
    if best < 0:
        return [start, end]
    cut = int(cuts[best])
    head = split_regimes(sums, start, cut, penalty=penalty, min_length=min_length, kind=kind)
    tail = split_regimes(sums, cut, end, penalty=penalty, min_length=min_length, kind=kind)
    return head[:-1] + tail
