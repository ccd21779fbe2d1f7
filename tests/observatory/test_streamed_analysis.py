"""The streamed analysis gives exactly the events of the all-rows analysis it replaced.

``data/analysis_golden.json`` holds the events that ``analyze`` gave on this
store at commit b71bd71, when it read every row of the store into Python
lists at once (``all_rows``) and ran the list-based detectors; regenerate it
only from that commit (``python -m tests.observatory.test_streamed_analysis``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from noisewall.observatory import store as store_module
from noisewall.observatory.engine import ChdbEngine
from noisewall.observatory.episodes import analyze
from noisewall.observatory.report_html import SeriesCounts, series_counts
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.store_types import SeriesColumns
from noisewall.observatory.synthetic import (
    NORMAL_KBPS,
    Injected,
    SyntheticNetwork,
    synthetic_measurements,
)

GOLDEN = Path(__file__).parent / "data" / "analysis_golden.json"
START = 1_500_000_000.0
INTERVAL = 60.0
ROUNDS = 900
#: (since, until) windows analysed besides the whole store.
WINDOWS = ((None, None), (START + 200 * INTERVAL, None), (None, START + 640 * INTERVAL),
           (START + 310 * INTERVAL, START + 700 * INTERVAL))

NETWORKS = (
    SyntheticNetwork("Net A", "AS64500", ("direct", "control"), events=(
        Injected("blocked", "photo", 120, 300, failure="connection_reset"),
        Injected("intermittent", "text", 400, 470, failure="eof_error"),
        Injected("throttled", "video", 500, 560, rate_kbps=128.0),
        Injected("blocked", "video", 560, 620, failure="generic_timeout_error"),
        Injected("blocked", "text", 800, None, failure="generic_timeout_error"),
    )),
    SyntheticNetwork("Net B", "AS64501", ("control", "direct", "vpn"), events=(
        Injected("throttled", "voice", 100, 260, rate_kbps=64.0),
        Injected("throttled", "voice", 100, 260, rate_kbps=64.0, vantage="vpn"),
        Injected("intermittent", "photo", 300, 420, success=0.3, vantage="vpn"),
        Injected("blocked", "location", 50, 90, failure="connection_refused"),
        Injected("intermittent", "location", 90, 180, success=0.6),
        Injected("throttled", "photo", 700, 760, vantage="control", rate_kbps=200.0),
        Injected("blocked", "register", 820, 840, vantage="control"),
    )),
)


def build(store: MeasurementStore) -> None:
    """Ingest the networks' measurements into ``store``."""
    for seed, network in enumerate(NETWORKS):
        report = store.ingest_measurements(synthetic_measurements(
            network, rounds=ROUNDS, start=START, interval=INTERVAL, seed=seed,
            stray_failure_rate=0.01))
        assert not report.errors


def analyses(store: MeasurementStore) -> list[list[dict[str, Any]]]:
    """The events of every window, as JSON objects."""
    return [[e.as_json() for e in analyze(store, since=since, until=until)]
            for since, until in WINDOWS]


def test_streamed_equals_all_rows(tmp_path: Path) -> None:
    with MeasurementStore(tmp_path / "store") as store:
        build(store)
        got = analyses(store)
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert sum(len(events) for events in expected) > 20
    assert got == expected


def test_counts_seen_by_the_analysis_are_the_reports(tmp_path: Path) -> None:
    """``observe analyze`` counts each series as it streams by: the report's counts."""
    with MeasurementStore(tmp_path / "store") as store:
        build(store)
        for since, until in WINDOWS:
            seen: list[SeriesCounts] = []

            def count(rows: SeriesColumns, seen: list[SeriesCounts] = seen) -> None:
                seen.append(SeriesCounts(rows.key, len(rows), int(rows.ok.sum())))

            analyze(store, since=since, until=until, on_series=count)
            seen.sort(key=lambda c: (c.key.network, c.key.vantage, c.key.feature))
            assert seen == [c for c, _ in series_counts(store, since, until)]


def test_batches_hold_one_batch_and_change_nothing(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the batch size, the same events; no read larger than a batch or one group."""
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    read: list[int] = []
    table = ChdbEngine.table

    def counted(engine: ChdbEngine, sql: str) -> pa.Table:
        found = table(engine, sql)
        if "FROM results FINAL" in sql and "ORDER BY network, vantage, feature, t" in sql:
            read.append(found.num_rows)
        return found

    monkeypatch.setattr(ChdbEngine, "table", counted)
    with MeasurementStore(tmp_path / "store") as store:
        build(store)
        groups = {(group[0].key.network, group[0].key.feature): sum(map(len, group))
                  for group in store.series_groups()}
        largest = max(groups.values())
        # Net A: 7 groups of 1,800 rows, Net B: 7 of 2,700. Batches: both networks at
        # once; Net A's features two at a time and Net B's one at a time; every group alone.
        for limit, batches in ((40_000, 1), (5_000, 4 + 7), (1, len(groups))):
            monkeypatch.setattr(store_module, "ANALYSIS_BATCH_ROWS", limit)
            read.clear()
            assert [e.as_json() for e in analyze(store)] == expected[0]
            assert len(read) == batches and sum(read) == sum(groups.values())
            assert max(read) <= max(limit, largest)
            assert analyses(store) == expected


def test_store_built_in_the_engine_is_what_ingest_stores(tmp_path: Path) -> None:
    """Same series, rows, times and row rules as ingesting the measurements; events found."""
    rounds = 600
    network = SyntheticNetwork("Net C", "AS64502", ("direct", "control"), events=(
        Injected("blocked", "photo", 100, 300, failure="connection_reset"),
        Injected("intermittent", "text", 350, 420, failure="eof_error"),
        Injected("throttled", "video", 450, 500, rate_kbps=128.0),
        Injected("blocked", "register", 520, None, failure="generic_timeout_error")))
    shapes = []
    for name in ("ingested", "engine"):
        with MeasurementStore(tmp_path / name) as store:
            if name == "ingested":
                assert not store.ingest_measurements(synthetic_measurements(
                    network, rounds=rounds, start=START, interval=INTERVAL, seed=0)).errors
            else:
                assert store.insert_synthetic([network], rounds=rounds, start=START,
                                              interval=INTERVAL) == 2 * rounds
            assert store.count() == 2 * rounds
            shape = {}
            for group in store.series_groups():
                for rows in group:
                    measured = ~np.isnan(rows.kbps)
                    assert (measured == (rows.ok & (rows.key.feature in NORMAL_KBPS))).all()
                    assert ((rows.failures >= 0) == ~rows.ok).all()
                    shape[rows.key] = (rows.times.tolist(), sorted(set(rows.failure_names)))
            shapes.append(shape)
            events = analyze(store)
        for injected in network.events:
            assert any((e.feature, e.kind, e.vantage) == (injected.feature, injected.kind,
                                                          "direct")
                       and abs(e.onset - START - injected.start * INTERVAL) <= 2 * INTERVAL
                       for e in events), (name, injected)
        assert all(e.vantage == "direct" for e in events)
    ingested, engine = shapes
    assert ingested.keys() == engine.keys()
    for key, (times, failures) in ingested.items():
        assert engine[key][0] == times
        assert set(engine[key][1]) <= set(failures) | {"generic_timeout_error"}


if __name__ == "__main__":
    with MeasurementStore(sys.argv[1]) as opened:
        build(opened)
        GOLDEN.write_text(json.dumps(analyses(opened), indent=1) + "\n", encoding="utf-8")
