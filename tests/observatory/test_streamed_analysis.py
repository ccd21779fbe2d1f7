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

from noisewall.observatory.episodes import analyze
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements

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


if __name__ == "__main__":
    with MeasurementStore(sys.argv[1]) as opened:
        build(opened)
        GOLDEN.write_text(json.dumps(analyses(opened), indent=1) + "\n", encoding="utf-8")
