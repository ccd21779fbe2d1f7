"""``noisewall bench observe``: ingest rate and analysis time on synthetic measurements.

The workload is 200,000 measurements (``--quick``: 20,000): 5 networks,
each with a direct and a control path, 7 features per measurement, one round
a minute, and on each direct path a blocked, an intermittent and a throttled
episode. Baselines, in the same run:

* ingest into the ClickHouse store (chDB: parse, check, store) against the
  engine's raw insert of the same lines into a table (both handed over in memory),
  in wall time and in CPU time, and against the SQLite store of earlier versions
  (parse in Python);
* analyze (all series, all detectors) against a raw scan of the same result
  rows in the engine, and against the same analysis on the SQLite store.

A last line counts the injected episodes that were found with the right
kind and an onset within 2 rounds.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from noisewall.bench.kit import BenchResult
from noisewall.observatory.episodes import Event, analyze
from noisewall.observatory.sqlite_store import SqliteStore
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements

NETWORKS = 5
VANTAGES = ("direct", "control")
INTERVAL = 60.0
START = 1_500_000_000.0
T = TypeVar("T")


def _networks(rounds: int) -> list[SyntheticNetwork]:
    networks = []
    for n in range(NETWORKS):
        def at(fraction: float, n: int = n) -> int:
            return int(rounds * fraction) + 7 * n

        networks.append(SyntheticNetwork(f"Synthetic Net {n}", f"AS6450{n}", VANTAGES, events=(
            Injected("blocked", "photo", at(0.2), at(0.4), failure="connection_reset"),
            Injected("intermittent", "text", at(0.5), at(0.52), failure="eof_error"),
            Injected("throttled", "video", at(0.7), at(0.71), rate_kbps=128.0),
            Injected("blocked", "text", at(0.9), None, failure="generic_timeout_error"),
        )))
    return networks


def _lines(networks: list[SyntheticNetwork], rounds: int) -> Iterator[bytes]:
    for n, network in enumerate(networks):
        for measurement in synthetic_measurements(network, rounds=rounds, start=START,
                                                  interval=INTERVAL, seed=n):
            yield json.dumps(measurement).encode()


def _found(injected: Injected, network: str, events: list[Event]) -> bool:
    onset = START + injected.start * INTERVAL
    return any(e.network == network and e.vantage == injected.vantage
               and e.feature == injected.feature and e.kind == injected.kind
               and abs(e.onset - onset) <= 2 * INTERVAL for e in events)


def _timed(run: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def _cpu_timed(run: Callable[[], T]) -> tuple[T, float, float]:
    """``run``'s result, wall seconds and CPU seconds of this process (every engine thread:
    chDB runs in-process), which the load of a shared machine moves much less than wall time.
    """
    started = time.process_time()
    result, seconds = _timed(run)
    return result, seconds, time.process_time() - started


def run_observe_benchmarks(quick: bool = False) -> list[BenchResult]:
    """Ingest and analysis figures against same-run baselines."""
    measurements = 20_000 if quick else 200_000
    rounds = measurements // (NETWORKS * len(VANTAGES))
    networks = _networks(rounds)
    lines = list(_lines(networks, rounds))
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-observe-") as tmp:
        with MeasurementStore(Path(tmp) / "bench.chdb") as store:
            _, raw_seconds, raw_cpu = _cpu_timed(lambda: store.insert_raw(lines))
            report, ingest_seconds, ingest_cpu = _cpu_timed(
                lambda: store.ingest_lines(lines, source="bench"))
            rows, scan_seconds = _timed(store.scan_results)
            events, analyze_seconds = _timed(lambda: analyze(store))
        with SqliteStore(Path(tmp) / "bench.sqlite") as sqlite:
            old, sqlite_ingest_seconds = _timed(lambda: sqlite.ingest_lines(lines, "bench"))
            _, sqlite_analyze_seconds = _timed(lambda: analyze(sqlite))
    injected = [(i, net.name) for net in networks for i in net.events]
    found = sum(_found(i, name, events) for i, name in injected)
    stored = report.stored
    return [
        BenchResult(f"ingest {stored:,} measurements (ClickHouse, chDB; {ingest_cpu:.1f} CPU-s)",
                    "measurements/s", stored / ingest_seconds,
                    f"engine raw insert of the same lines ({raw_cpu:.1f} CPU-s)",
                    len(lines) / raw_seconds),
        BenchResult(f"ingest {stored:,} measurements (ClickHouse, chDB)", "measurements/s",
                    stored / ingest_seconds, "SQLite store, parsed in Python",
                    old.stored / sqlite_ingest_seconds),
        BenchResult(f"analyze {stored:,} measurements ({rows:,} rows) in "
                    f"{analyze_seconds:.1f} s", "rows/s", rows / analyze_seconds,
                    "raw scan of the rows in the engine", rows / scan_seconds),
        BenchResult(f"analyze {stored:,} measurements ({rows:,} rows) in "
                    f"{analyze_seconds:.1f} s", "rows/s", rows / analyze_seconds,
                    f"SQLite store ({sqlite_analyze_seconds:.1f} s)",
                    rows / sqlite_analyze_seconds),
        BenchResult(f"injected episodes found ({len(events)} events in all)", "episodes",
                    float(found), "injected", float(len(injected))),
    ]
