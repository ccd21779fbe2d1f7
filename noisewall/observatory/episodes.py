"""Events from time series: blocked, intermittent and throttled episodes per feature.

For each (network, vantage, feature) series:

1. failures: the CUSUM (:mod:`.cusum`) on the per-round failure indicator
   finds episodes; each onset and end is dated by maximum likelihood
   (:mod:`.bernoulli`); an episode is cut where it switches between blocked
   and intermittent, and each part is named by its success fraction;
2. throughput: the same CUSUM on the slow indicator (:mod:`.throttle`) finds
   throttled episodes; a policer's flat plateau is told from congestion's
   variance by the coefficient of variation.

:func:`detect_series` is pure (NumPy columns in, events out); :func:`analyze`
feeds it from a store one (network, feature) group at a time, so memory holds
one group, not the store.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from noisewall.observatory.bernoulli import (
    date_change,
    likelihood_ratio,
    log_likelihood,
    prefix_sums,
    split_regimes,
)
from noisewall.observatory.config import DetectorConfig
from noisewall.observatory.cusum import CusumParams, Episode, cusum_episodes
from noisewall.observatory.store_types import Codes, Flags, Floats, SeriesColumns, SeriesSource
from noisewall.observatory.throttle import slow_rounds
from noisewall.records.measurement import ooni_time

EventKind = Literal["blocked", "throttled", "intermittent"]
_CONTROL_COVERAGE = 0.5  # share of slow rounds the control must confirm to rule out congestion


@dataclass(frozen=True, slots=True)
class Event:
    """One detected event on one series; times are POSIX seconds of probe rounds."""

    network: str
    vantage: str
    feature: str
    kind: EventKind
    onset: float
    end: float | None
    failure: str | None
    rate_kbps: float | None
    success_fraction: float | None
    confidence: float
    rounds: int

    def as_json(self) -> dict[str, object]:
        """A JSON object with the fields, plus the times in OONI's format."""
        data: dict[str, object] = asdict(self)
        data["onset_utc"] = ooni_time(self.onset)
        data["end_utc"] = None if self.end is None else ooni_time(self.end)
        return data


def probe_interval(times: Floats | Sequence[float]) -> float:
    """The series' typical spacing between rounds (median positive step), 1 s if unknown."""
    steps = np.diff(np.asarray(times, dtype=np.float64))
    steps = steps[steps > 0]
    return float(np.median(steps)) if len(steps) else 1.0


def _params(config: DetectorConfig, interval: float) -> CusumParams:
    c = config.cusum
    return CusumParams(c.mu0, c.mu1, c.threshold, c.end_threshold, c.gap_rounds * interval,
                       c.gap_half_life_rounds * interval)


def _confidence(config: DetectorConfig, k: float, n: int, p0: float) -> float:
    return 1 - math.exp(-likelihood_ratio(k, n, p0) / config.classify.confidence_scale)


@dataclass(frozen=True, slots=True)
class _Span:
    """A dated episode: rows ``[start, stop)``, ``ended`` if the series recovered at ``stop``."""

    start: int
    stop: int
    ended: bool
    background: float


def _background(sums: Floats, episodes: Sequence[Episode], n: int, lookback: int,
                floor: float) -> float:
    """The failure rate of the rounds no episode (nor its lookback) touches, at least ``floor``."""
    k, rounds, previous = 0.0, 0, 0
    for episode in episodes:
        lo = max(previous, episode.onset.start - lookback)
        k += float(sums[lo] - sums[previous])
        rounds += lo - previous
        previous = max(lo, episode.end.alarm + 1 if episode.end is not None else n)
    k += float(sums[n] - sums[previous])
    rounds += n - previous
    return min(max(k / rounds if rounds else 0.0, floor), 0.5)


def _dated_spans(xs: Floats, sums: Floats, episodes: Sequence[Episode],
                 config: DetectorConfig) -> list[_Span]:
    """Each CUSUM episode with its onset and end moved to their most likely rounds."""
    lookback = config.cusum.refine_lookback_rounds
    background = _background(sums, episodes, len(xs), lookback,
                             config.classify.baseline_failure_floor)
    spans: list[_Span] = []
    previous = 0
    for episode in episodes:
        lo = max(previous, episode.onset.start - lookback)
        extent = len(xs) if episode.end is None else episode.end.start
        start = date_change(sums, lo, episode.onset.alarm, before=background, after=None,
                            last=max(extent, episode.onset.alarm + 1))
        if episode.end is None:
            stop, ended = len(xs), False
        else:
            lo = max(start + 1, episode.end.start - lookback)
            stop = date_change(sums, lo, episode.end.alarm, before=None, after=background,
                               first=start)
            ended = True
        spans.append(_Span(start, stop, ended, background))
        previous = stop
    return _merged(spans, sums, config.classify.split_penalty)


def _merged(spans: list[_Span], sums: Floats, penalty: float) -> list[_Span]:
    """Join episodes whose gap is no clearer evidence of recovery than ``penalty`` allows.

    A flaky feature has lucky streaks; the CUSUM may end an episode on one.
    The gap stays part of the event unless the fine rate explains it better
    than the event's own rate by more than ``penalty`` (log-likelihood).
    """
    result: list[_Span] = []
    for span in spans:
        if result and result[-1].ended:
            last = result[-1]
            k_event = float(sums[last.stop] - sums[last.start] + sums[span.stop]
                            - sums[span.start])
            n_event = last.stop - last.start + span.stop - span.start
            k_gap, n_gap = float(sums[span.start] - sums[last.stop]), span.start - last.stop
            evidence = (log_likelihood(k_gap, n_gap, last.background)
                        - log_likelihood(k_gap, n_gap, k_event / n_event))
            if evidence < penalty:
                result[-1] = _Span(last.start, span.stop, span.ended, last.background)
                continue
        result.append(span)
    return result


def _most_common(codes: Codes) -> int:
    """The failure code seen most often (-1: none); on a tie the one seen first."""
    named = codes[codes >= 0]
    if len(named) == 0:
        return -1
    counts = np.bincount(named)
    tied = np.flatnonzero(counts == counts.max())
    if len(tied) == 1:
        return int(tied[0])
    return int(min(tied, key=lambda code: int(np.argmax(named == code))))


def _failure_events(rows: SeriesColumns, config: DetectorConfig) -> list[Event]:
    xs = (~rows.ok).astype(np.float64)
    times = rows.times
    sums = prefix_sums(xs)
    episodes = cusum_episodes(xs, times, _params(config, probe_interval(times)))
    limit = config.classify.blocked_max_success

    def blocked(failure_fractions: Floats) -> Flags:
        flags: Flags = 1 - failure_fractions <= limit
        return flags

    events: list[Event] = []
    for span in _dated_spans(xs, sums, episodes, config):
        bounds = split_regimes(sums, span.start, span.stop,
                               penalty=config.classify.split_penalty,
                               min_length=config.classify.min_segment_rounds, kind=blocked)
        for start, stop in itertools.pairwise(bounds):
            n = stop - start
            k = float(sums[stop] - sums[start])
            is_blocked = 1 - k / n <= limit
            code = _most_common(rows.failures[start:stop])
            recovered = stop < len(times) and (span.ended or stop < span.stop)
            events.append(Event(
                network=rows.key.network, vantage=rows.key.vantage, feature=rows.key.feature,
                kind="blocked" if is_blocked else "intermittent",
                onset=float(times[start]), end=float(times[stop]) if recovered else None,
                failure=rows.failure_names[code] if code >= 0 else None,
                rate_kbps=None,
                success_fraction=None if is_blocked else round(1 - k / n, 4),
                confidence=round(_confidence(config, k, n, span.background), 4),
                rounds=n,
            ))
    return events


def _throttle_events(rows: SeriesColumns, control: SeriesColumns | None,
                     config: DetectorConfig) -> list[Event]:
    measured = ~np.isnan(rows.kbps)
    if not measured.any():
        return []
    times, rates = rows.times[measured], rows.kbps[measured]
    interval = probe_interval(rows.times)
    if control is None:
        control_times = control_rates = np.empty(0)
    else:
        control_measured = ~np.isnan(control.kbps)
        control_times = control.times[control_measured]
        control_rates = control.kbps[control_measured]
    judged = slow_rounds(times, rates, control_times=control_times, control_rates=control_rates,
                         window=config.throttle.control_window_rounds * interval,
                         config=config.throttle)
    xs = judged.slow
    sums = prefix_sums(xs)
    episodes = cusum_episodes(xs, times, _params(config, interval))
    events: list[Event] = []
    for span in _dated_spans(xs, sums, episodes, config):
        slow = np.flatnonzero(xs[span.start:span.stop]) + span.start
        if len(slow) == 0:
            continue
        slow_rates = rates[slow].tolist()
        mean = statistics.fmean(slow_rates)
        cv = statistics.pstdev(slow_rates) / mean if mean > 0 else 0.0
        coverage = int(np.count_nonzero(judged.confirmed_by_control[slow])) / len(slow)
        flat = cv <= config.throttle.plateau_max_cv
        if not flat and coverage < _CONTROL_COVERAGE:
            continue  # varying and unconfirmed by the control path: congestion
        n = span.stop - span.start
        score = _confidence(config, float(sums[span.stop] - sums[span.start]), n,
                            span.background)
        score *= (1.0 if coverage >= _CONTROL_COVERAGE else 0.8) * (1.0 if flat else 0.5)
        events.append(Event(
            network=rows.key.network, vantage=rows.key.vantage, feature=rows.key.feature,
            kind="throttled", onset=float(times[span.start]),
            end=float(times[span.stop]) if span.ended else None, failure=None,
            rate_kbps=round(statistics.median(slow_rates), 3), success_fraction=None,
            confidence=round(score, 4), rounds=n,
        ))
    return events


def _one_state_at_a_time(events: list[Event], times: Floats) -> list[Event]:
    """Each event ended where the next one on the series begins.

    A policer's slow rounds are only seen while transfers work, so a block
    pauses a throttle's evidence rather than ending it, and a flapping
    feature's failure episode is dated past the working (but throttled)
    rounds that follow it: the next event's onset is the better end. At one
    onset, the failure event holds the series.
    """
    ordered = sorted(events, key=lambda e: (e.onset, e.kind != "throttled"))
    result = []
    for event, following in zip(ordered, [*ordered[1:], None], strict=False):
        end = event.end
        if following is not None and (end is None or following.onset < end):
            end = following.onset
        if end is None or end > event.onset:
            result.append(_clipped(event, event.onset, end, times))
    return result


def _clipped(event: Event, onset: float, end: float | None, times: Floats) -> Event:
    if (onset, end) == (event.onset, event.end):
        return event
    # The rounds in [onset, end): the times are sorted.
    stop = len(times) if end is None else int(np.searchsorted(times, end, side="left"))
    rounds = max(stop - int(np.searchsorted(times, onset, side="left")), 0)
    return replace(event, onset=onset, end=end, rounds=rounds)


def detect_series(rows: SeriesColumns, config: DetectorConfig,
                  control: SeriesColumns | None = None, *,
                  reference: bool = False) -> list[Event]:
    """All events on one series (``control``: the same feature over the control path).

    ``reference``: this series *is* the control path. Its failures are still
    events, but not its slowdowns: the control is what tells congestion from
    censorship (:mod:`.throttle`), so a slowdown on it is congestion by that
    definition, such as a busy machine's (a probe pushed off the CPU for a
    round measures its 10 ms transfer 5-20 times slower).

    One state at a time: an event ends where the next one begins (a throttled
    event where a block begins, and so on).
    """
    if len(rows) == 0:
        return []
    throttled = [] if reference else _throttle_events(rows, control, config)
    return _one_state_at_a_time(_failure_events(rows, config) + throttled, rows.times)


def _order(event: Event) -> tuple[float, str, str, str, str]:
    return (event.onset, event.network, event.vantage, event.feature, event.kind)


def analyze(store: SeriesSource, config: DetectorConfig | None = None, *,
            since: float | None = None, until: float | None = None,
            on_series: Callable[[SeriesColumns], None] | None = None) -> list[Event]:
    """Every event in the store (optionally within ``[since, until)``), sorted by onset.

    The store hands over one (network, feature) group at a time: each series
    with its control path, and nothing else stays in memory but the events.
    ``on_series`` sees each series as it is read (e.g. to count its rows).
    """
    config = config or DetectorConfig()
    control_vantage = config.throttle.control_vantage
    events: list[Event] = []
    for group in store.series_groups(since=since, until=until):
        control = next((s for s in group if s.key.vantage == control_vantage), None)
        for rows in group:
            if on_series is not None:
                on_series(rows)
            reference = rows.key.vantage == control_vantage
            events.extend(detect_series(rows, config, None if reference else control,
                                        reference=reference))
    return sorted(events, key=_order)
