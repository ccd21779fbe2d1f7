"""Score detected events against the ground truth (sans-IO).

A (vantage, feature) is in one state at a time, in the truth as in the
detection: a true event ends where the next one on the same (vantage,
feature) begins (a throttle followed by a block ends when the block starts).

Each ground-truth event is paired with at most one detected event of the same
(vantage, feature): the unpaired one whose onset is closest to the first probe
round at or after the true onset, among those that start no earlier than
``tolerance`` rounds before it and before the true event ends. A pair passes
when the kinds agree and both the onset and the end are within ``tolerance``
rounds: ends are measured, like onsets, from the first probe round at or after
the true end; a true event still on at the end of the span matches a
detected event still open (or one ending within ``tolerance`` rounds of the
span's end). Detected events left unpaired are false alarms. A run passes
when every ground-truth event is detected and passes, and there is no false
alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from noisewall.lab.groundtruth import TruthEvent, iso
from noisewall.lab.schedule import Schedule
from noisewall.observatory.report_grid import EventSpan

__all__ = ["DEFAULT_TOLERANCE_ROUNDS", "SCORE_COLUMNS", "Pair", "Score", "score"]

#: Column names of :meth:`Score.rows`.
SCORE_COLUMNS = ("vantage", "feature", "true kind", "true onset (UTC)", "true end (UTC)",
                 "source", "detected kind", "detected onset (UTC)", "detected end (UTC)",
                 "onset error (rounds)", "end error (rounds)", "verdict")

#: Onset error allowed, in probe rounds ("onset within 2 probe rounds").
DEFAULT_TOLERANCE_ROUNDS = 2


def _detected_json(event: EventSpan) -> dict[str, Any]:
    return {"vantage": event.vantage, "feature": event.feature, "kind": event.kind,
            "onset": event.onset, "onset_utc": iso(event.onset),
            "end": event.end, "end_utc": iso(event.end)}


@dataclass(frozen=True, slots=True)
class Pair:
    """A ground-truth event and the detected event paired with it (``None``: missed)."""

    truth: TruthEvent
    detected: EventSpan | None
    onset_error_rounds: float | None
    tolerance_rounds: float
    end_error_rounds: float | None = None
    end_ok: bool = False

    @property
    def missed(self) -> bool:
        """Nothing was detected for this event."""
        return self.detected is None

    @property
    def kind_ok(self) -> bool:
        """The detected kind is the true kind."""
        return self.detected is not None and self.detected.kind == self.truth.kind

    @property
    def on_time(self) -> bool:
        """The onset error is within the tolerance."""
        return (self.onset_error_rounds is not None
                and abs(self.onset_error_rounds) <= self.tolerance_rounds)

    @property
    def passed(self) -> bool:
        """Detected, right kind, onset and end on time."""
        return self.kind_ok and self.on_time and self.end_ok

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "truth": self.truth.as_json(),
            "detected": _detected_json(self.detected) if self.detected is not None else None,
            "onset_error_rounds": self.onset_error_rounds,
            "end_error_rounds": self.end_error_rounds,
            "kind_ok": self.kind_ok,
            "on_time": self.on_time,
            "end_ok": self.end_ok,
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True)
class Score:
    """The pairs, in ground-truth order, and the false alarms."""

    pairs: tuple[Pair, ...]
    false_alarms: tuple[EventSpan, ...]
    tolerance_rounds: float

    @property
    def passed(self) -> bool:
        """Every true event detected with the right kind and on time, no false alarm."""
        return all(p.passed for p in self.pairs) and not self.false_alarms

    def rows(self) -> list[tuple[str, ...]]:
        """One row per true event, then one per false alarm (see :data:`SCORE_COLUMNS`)."""
        rows: list[tuple[str, ...]] = []
        for pair in self.pairs:
            t, d = pair.truth, pair.detected
            verdict = ("ok" if pair.passed else "MISSED" if d is None
                       else "WRONG KIND" if not pair.kind_ok
                       else "LATE/EARLY" if not pair.on_time else "WRONG END")
            seen = (("-", "-", "-") if d is None
                    else (d.kind, iso(d.onset) or "", iso(d.end) or "open"))
            rows.append((t.vantage, t.feature, t.kind, iso(t.onset) or "", iso(t.end) or "open",
                         t.source, *seen, _rounds(pair.onset_error_rounds),
                         "" if d is None else _end_error(pair), verdict))
        rows.extend((a.vantage, a.feature, "-", "-", "-", "-", a.kind, iso(a.onset) or "",
                     iso(a.end) or "open", "", "", "FALSE ALARM") for a in self.false_alarms)
        return rows

    @property
    def missed(self) -> int:
        """Ground-truth events with no detection."""
        return sum(p.missed for p in self.pairs)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "passed": self.passed,
            "tolerance_rounds": self.tolerance_rounds,
            "events": len(self.pairs),
            "detected_ok": sum(p.passed for p in self.pairs),
            "kind_mismatches": sum(not p.missed and not p.kind_ok for p in self.pairs),
            "late_or_early": sum(not p.missed and not p.on_time for p in self.pairs),
            "wrong_end": sum(not p.missed and not p.end_ok for p in self.pairs),
            "missed": self.missed,
            "false_alarms": [_detected_json(e) for e in self.false_alarms],
            "pairs": [p.as_json() for p in self.pairs],
        }


def _rounds(error: float | None) -> str:
    return "" if error is None else f"{error:+g}"


def _end_error(pair: Pair) -> str:
    if pair.end_error_rounds is not None:
        return _rounds(pair.end_error_rounds)
    return "open" if pair.end_ok else "open, should end"


def _later(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


def one_state_at_a_time(truth: Sequence[TruthEvent]) -> list[TruthEvent]:
    """The true events with overlaps resolved per (vantage, feature).

    An event ends where a later one of another kind begins; overlapping events
    of one kind are one event.
    """
    result: list[TruthEvent] = []
    for event in sorted(truth, key=lambda e: (e.vantage, e.feature, e.onset)):
        last = result[-1] if result else None
        if (last is None or (last.vantage, last.feature) != (event.vantage, event.feature)
                or (last.end is not None and last.end <= event.onset)):
            result.append(event)
        elif last.kind == event.kind:
            result[-1] = replace(last, end=_later(last.end, event.end))
        else:
            result[-1] = replace(last, end=event.onset)
            result.append(event)
    return result


def _end_judged(event: TruthEvent, detected: EventSpan, schedule: Schedule,
                tolerance_rounds: float) -> tuple[float | None, bool]:
    """The end error in rounds (None: one of the two is open) and whether it passes."""
    if event.end is None:
        if detected.end is None:
            return None, True
        error = (detected.end - schedule.end) / schedule.interval
        return error, abs(error) <= tolerance_rounds
    expected = schedule.time_of(schedule.first_round_at_or_after(event.end))
    if detected.end is None:  # open: right only if the recovery came too late to be seen
        return None, (len(schedule) - schedule.first_round_at_or_after(event.end)
                      <= tolerance_rounds)
    error = (detected.end - expected) / schedule.interval
    return error, abs(error) <= tolerance_rounds


def score(
    truth: Sequence[TruthEvent],
    detected: Iterable[EventSpan],
    schedule: Schedule,
    tolerance_rounds: float = DEFAULT_TOLERANCE_ROUNDS,
) -> Score:
    """Pair ``detected`` with ``truth`` on the probe ``schedule`` and judge each pair."""
    unpaired = list(detected)
    pairs = []
    for event in sorted(one_state_at_a_time(truth),
                        key=lambda e: (e.onset, e.vantage, e.feature)):
        expected = schedule.time_of(schedule.first_round_at_or_after(event.onset))
        earliest = expected - tolerance_rounds * schedule.interval
        latest = math.inf if event.end is None else event.end
        candidates = [d for d in unpaired
                      if d.vantage == event.vantage and d.feature == event.feature
                      and earliest <= d.onset < latest]
        if not candidates:
            pairs.append(Pair(event, None, None, tolerance_rounds))
            continue
        best = min(candidates, key=lambda d: (abs(d.onset - expected), d.kind != event.kind))
        unpaired.remove(best)
        error = (best.onset - expected) / schedule.interval
        end_error, end_ok = _end_judged(event, best, schedule, tolerance_rounds)
        pairs.append(Pair(event, best, error, tolerance_rounds, end_error, end_ok))
    return Score(tuple(pairs), tuple(unpaired), tolerance_rounds)
