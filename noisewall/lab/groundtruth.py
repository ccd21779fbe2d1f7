"""Ground truth: the scenario's censor timeline as (vantage, feature, kind, onset, end) events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from noisewall.lab.scenario import Scenario

__all__ = ["TruthEvent", "ground_truth", "iso"]


def iso(ts: float | None) -> str | None:
    """POSIX seconds as ``YYYY-MM-DD HH:MM`` UTC (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """What the censor does to one (vantage, feature) from ``onset`` to ``end`` (exclusive;
    ``None``: still at the end of the scenario). ``rule`` is the timeline entry."""

    vantage: str
    feature: str
    kind: str
    onset: float
    end: float | None
    rule: str
    source: str
    rate_kbps: float | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view with ISO dates."""
        return {
            "vantage": self.vantage,
            "feature": self.feature,
            "kind": self.kind,
            "onset": self.onset,
            "onset_utc": iso(self.onset),
            "end": self.end,
            "end_utc": iso(self.end),
            "rule": self.rule,
            "source": self.source,
            "rate_kbps": self.rate_kbps,
        }


def ground_truth(scenario: Scenario) -> list[TruthEvent]:
    """Every expected event of the scenario, sorted by onset, vantage and feature."""
    events: list[TruthEvent] = []
    for entry, rule in zip(scenario.timeline, scenario.policy.rules, strict=True):
        expect = entry.expect
        if expect is None:
            continue
        rate = rule.action.rate_kbps if rule.action.kind == "throttle" else None
        for window in rule.active:
            assert window.start is not None  # the scenario validator requires one
            end = window.until if window.until is not None and window.until < scenario.end else None
            events.extend(
                TruthEvent(vantage, feature, expect.kind, window.start, end, entry.name,
                           entry.source, rate)
                for vantage in expect.vantages
                for feature in expect.features
                if scenario.vantage(vantage).measures(feature)
            )
    return sorted(events, key=lambda e: (e.onset, e.vantage, e.feature))
