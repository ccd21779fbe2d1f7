"""``filtered`` events: server-side filtering found by the keyword probe (sans-IO).

Distinct from the network's ``blocked``: a candidate message is *filtered* in a
round when the control message of the same round and scope arrived and the
candidate did not, so the path worked and the server chose not to deliver.
Rounds whose control did not arrive (or that failed outright) say nothing
and are skipped. The server's filtering is deterministic, so an episode is
simply a run of at least :data:`MIN_ROUNDS` filtered rounds: its onset is the
first of them, its end the first later round in which the candidate arrived.

One series per (network, region, candidate); the feature is named
``keyword:<id>`` or ``image:<id>``, the vantage is the region.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from noisewall.records.keyword import TEST_NAME, KeywordTestKeys
from noisewall.records.measurement import ooni_time, parse_ooni_time

#: Filtered rounds in a row before an episode counts (one lost message is not a list).
MIN_ROUNDS = 2


@dataclass(frozen=True, slots=True)
class FilteredEvent:
    """One episode of server-side filtering of one candidate, seen from one region."""

    network: str
    vantage: str
    feature: str
    onset: float
    end: float | None
    rounds: int
    kind: Literal["filtered"] = "filtered"

    def as_json(self) -> dict[str, object]:
        """A JSON object with the fields, plus the times in OONI's format."""
        return {"network": self.network, "vantage": self.vantage, "feature": self.feature,
                "kind": self.kind, "onset": self.onset, "onset_utc": ooni_time(self.onset),
                "end": self.end, "end_utc": None if self.end is None else ooni_time(self.end),
                "rounds": self.rounds}


SeriesKey = tuple[str, str, str]


def keyword_rounds(measurements: Iterable[Mapping[str, Any]]
                   ) -> dict[SeriesKey, list[tuple[float, bool | None]]]:
    """Per (network, region, feature): (round time, filtered?) in time order; None: unknown.

    Measurements of other tests are skipped; a keyword measurement whose test
    keys are malformed raises :class:`ValueError`.
    """
    series: dict[SeriesKey, list[tuple[float, bool | None]]] = {}
    for measurement in measurements:
        if measurement.get("test_name") != TEST_NAME:
            continue
        try:
            keys = KeywordTestKeys.model_validate(measurement.get("test_keys"))
            when = parse_ooni_time(str(measurement.get("measurement_start_time")))
        except ValidationError as exc:
            raise ValueError(f"keyword measurement {measurement.get('id')!r}: "
                             f"{exc.errors()[0]['msg']}") from None
        network = str(measurement.get("probe_network_name") or measurement.get("probe_asn"))
        for prefix, outcomes in (("keyword", keys.combinations), ("image", keys.images)):
            for name, outcome in outcomes.items():
                control = keys.control.get(outcome.scope)
                known = keys.failure is None and control is True and outcome.arrived is not None
                series.setdefault((network, keys.region, f"{prefix}:{name}"), []).append(
                    (when, (not outcome.arrived) if known else None))
    for rounds in series.values():
        rounds.sort(key=lambda item: item[0])
    return series


def episodes(rounds: list[tuple[float, bool | None]]) -> list[tuple[float, float | None, int]]:
    """(onset, end, rounds) of each run of at least MIN_ROUNDS filtered rounds."""
    found: list[tuple[float, float | None, int]] = []
    onset: float | None = None
    count = 0
    for when, filtered in rounds:
        if filtered is None:
            continue
        if filtered:
            onset = when if onset is None else onset
            count += 1
            continue
        if onset is not None and count >= MIN_ROUNDS:
            found.append((onset, when, count))
        onset, count = None, 0
    if onset is not None and count >= MIN_ROUNDS:
        found.append((onset, None, count))
    return found


def filtered_events(measurements: Iterable[Mapping[str, Any]]) -> list[FilteredEvent]:
    """Every filtered episode in ``measurements``, by onset, region and feature."""
    events = [FilteredEvent(network, vantage, feature, onset, end, count)
              for (network, vantage, feature), rounds in keyword_rounds(measurements).items()
              for onset, end, count in episodes(rounds)]
    return sorted(events, key=lambda e: (e.onset, e.vantage, e.feature))
