"""``noisewall bench observe``: ingest rate and analysis time on synthetic measurements.

The workload is 1,000,000 measurements (``--quick``: 20,000): 5 networks,
each with a direct and a control path, 7 features per measurement, one round
a minute, and on each direct path a blocked, an intermittent and a throttled
episode. Baselines, in the same run:

* ingest (parse, validate, store) against ``json.loads`` of the same lines;
* analyze (all series, all detectors) against a raw ``SELECT`` scan of the
  same result rows; the analysis time itself is the figure the issue asks
  for (<= 60 s for 1,000,000 measurements).

A last line counts the injected episodes that were found with the right
kind and an onset within 2 rounds.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from noisewall.noise.bench import BenchResult
from noisewall.observatory.detect import Event, analyze
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements

NETWORKS = 5
VANTAGES = ("direct", "control")
INTERVAL = 60.0
START = 1_500_000_000.0


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


def run_observe_benchmarks(quick: bool = False) -> list[BenchResult]:
    """Ingest and analysis figures against same-run baselines."""
    measurements = 20_000 if quick else 1_000_000
    rounds = measurements // (NETWORKS * len(VANTAGES))
    networks = _networks(rounds)
    lines = list(_lines(networks, rounds))
    started = time.perf_counter()
    for line in lines:
        json.loads(line)
    parse_rate = len(lines) / (time.perf_counter() - started)
    with (tempfile.TemporaryDirectory(prefix="noisewall-bench-observe-") as tmp,
          MeasurementStore(Path(tmp) / "bench.db") as store):
        started = time.perf_counter()
        report = store.ingest_lines(lines, source="bench")
        ingest_rate = report.stored / (time.perf_counter() - started)
        del lines
        started = time.perf_counter()
        rows = store.scan_results()
        scan_seconds = time.perf_counter() - started
        started = time.perf_counter()
        events = analyze(store)
        analyze_seconds = time.perf_counter() - started
    injected = [(i, net.name) for net in networks for i in net.events]
    found = sum(_found(i, name, events) for i, name in injected)
    return [
        BenchResult(f"ingest {report.stored:,} measurements", "measurements/s", ingest_rate,
                    "json.loads of the same lines", parse_rate),
        BenchResult(f"analyze {report.stored:,} measurements ({rows:,} rows) in "
                    f"{analyze_seconds:.1f} s", "rows/s", rows / analyze_seconds,
                    "raw SELECT scan of the rows", rows / scan_seconds),
        BenchResult(f"injected episodes found ({len(events)} events in all)", "episodes",
                    float(found), "injected", float(len(injected))),
    ]
