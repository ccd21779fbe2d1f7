"""``noisewall bench observe``: ingest rate and analysis time on synthetic measurements.

The workload: 5 networks, each with a direct and a control path, 7 features
per measurement, one round a minute, and on each direct path a blocked, an
intermittent and a throttled episode and a block that lasts to the end.
Baselines, in the same run:

* ``observe ingest`` of a file of 200,000 measurements (``--quick``: 20,000) as
  JSON lines into the ClickHouse store (chDB: read, parse, check, store) against
  what a user could run instead (:mod:`noisewall.observatory.baselines`): the
  engine's raw insert of the file's lines into a table, and the engine's own
  ``JSONEachRow`` parse of them into typed columns with no checks; in wall time and
  CPU time; and against the SQLite store of earlier versions (parse in Python);
* ``noisewall observe analyze --json`` (all series, all detectors, a process
  of its own: its wall time, CPU time and peak memory) on a store of
  ``--measurements`` measurements (default as many as the ingest) against a
  raw scan of the same result rows by the engine. That store is written by the
  engine itself (:func:`noisewall.observatory.synthetic.synthetic_sql`): the
  rows ingest would store for such measurements, without the JSON lines, which
  would take too long to ingest at 10,000,000; then merged, as a store is once
  the engine has merged its inserts.

A last line counts the injected episodes that the analysis found with the
right kind and an onset within 2 rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from noisewall.bench.kit import BenchResult
from noisewall.observatory.baselines import raw_insert, typed_insert
from noisewall.observatory.engine import ChdbEngine
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


def _found(injected: Injected, network: str, events: Sequence[Mapping[str, Any]]) -> bool:
    onset = START + injected.start * INTERVAL
    return any(e["network"] == network and e["vantage"] == injected.vantage
               and e["feature"] == injected.feature and e["kind"] == injected.kind
               and abs(e["onset"] - onset) <= 2 * INTERVAL for e in events)


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


def run_observe_benchmarks(quick: bool = False, measurements: int | None = None,
                           ingested: int | None = None) -> list[BenchResult]:
    """Ingest and analysis figures against same-run baselines.

    ``ingested``: the size of the ingested file (default 200,000, ``quick`` 20,000);
    ``measurements``: the size of the analysed store (default: as many as the ingest).
    """
    size = ingested or (20_000 if quick else 200_000)
    return _ingest_benchmarks(size) + _analysis_benchmarks(measurements or size)


def _ingest_benchmarks(measurements: int) -> list[BenchResult]:
    """``observe ingest`` of a file against what a user could run instead, and the SQLite store."""
    rounds = measurements // (NETWORKS * len(VANTAGES))
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-observe-") as tmp:
        path = Path(tmp) / "measurements.jsonl"
        with open(path, "wb") as out:
            for line in _lines(_networks(rounds), rounds):
                out.write(line + b"\n")
        # One engine folder per process at a time: the baselines' folder closes first.
        engine = ChdbEngine(Path(tmp) / "baselines")
        try:
            raw, raw_seconds, raw_cpu = _cpu_timed(lambda: raw_insert(engine, path))
            typed, typed_seconds, typed_cpu = _cpu_timed(lambda: typed_insert(engine, path))
        finally:
            engine.close()
        with MeasurementStore(Path(tmp) / "bench.chdb") as store:
            report, ingest_seconds, ingest_cpu = _cpu_timed(lambda: store.ingest_files([path]))
        with SqliteStore(Path(tmp) / "bench.sqlite") as sqlite:
            old, sqlite_ingest_seconds = _timed(lambda: sqlite.ingest_files([path]))
    stored = report.stored
    name = f"ingest {stored:,} measurements from a file (ClickHouse, chDB"
    rate = stored / ingest_seconds
    return [
        BenchResult(f"{name}; {ingest_cpu:.1f} CPU-s)", "measurements/s", rate,
                    f"engine raw insert of the same lines ({raw_cpu:.1f} CPU-s)",
                    raw / raw_seconds),
        BenchResult(f"{name})", "measurements/s", rate,
                    "engine JSONEachRow insert into typed columns, no checks, no line kept, "
                    f"no feature rows ({typed_cpu:.1f} CPU-s)", typed / typed_seconds),
        BenchResult(f"{name})", "measurements/s", rate, "SQLite store, parsed in Python",
                    old.stored / sqlite_ingest_seconds),
    ]


#: The analysis process: the CLI's ``observe analyze --json``, then its own peak RSS on stderr.
#: (The kernel's peak for a child counts the parent's memory it was forked from; the
#: process's own high-water mark, ``VmHWM``, starts afresh at exec.)
_ANALYZE = ("import re, sys\n"
            "from noisewall.cli import cli\n"
            "cli.main(['observe', 'analyze', '--db', sys.argv[1], '--json'], "
            "standalone_mode=False)\n"
            "status = open('/proc/self/status', encoding='ascii').read()\n"
            "print(int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1)) * 1024, "
            "file=sys.stderr)\n")


def _analyze_process(db: Path) -> tuple[list[dict[str, Any]], float, float, int]:
    """``noisewall observe analyze --json`` on ``db``: events, wall and CPU seconds, peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(  # noqa: S603 - our own code
            [sys.executable, "-c", _ANALYZE, str(db)], stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        errors = err.read().decode(errors="replace").strip()
        if child.returncode != 0:
            raise RuntimeError(f"noisewall observe analyze exited {child.returncode}: {errors}")
        out.seek(0)
        events: list[dict[str, Any]] = json.load(out)
    return events, seconds, usage.ru_utime + usage.ru_stime, int(errors.splitlines()[-1])


def _analysis_benchmarks(measurements: int) -> list[BenchResult]:
    """``observe analyze`` of a store built in the engine, against a raw scan of its rows."""
    rounds = measurements // (NETWORKS * len(VANTAGES))
    networks = _networks(rounds)
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-analyze-") as tmp:
        db = Path(tmp) / "analyze.chdb"
        with MeasurementStore(db) as store:
            stored = store.insert_synthetic(networks, rounds=rounds, start=START,
                                            interval=INTERVAL)
            store.merge()
            rows, scan_seconds = _timed(store.scan_results)
        events, seconds, cpu, peak = _analyze_process(db)
    injected = [(i, net.name) for net in networks for i in net.events]
    found = sum(_found(i, name, events) for i, name in injected)
    # What the analysed columns of every row take at rest (t, ok, failure code, kbps).
    columns_bytes = rows * (8 + 1 + 4 + 8)
    name = f"analyze {stored:,} measurements ({rows:,} rows)"
    return [
        BenchResult(f"{name}: {seconds:.1f} s wall, {cpu:.1f} s CPU", "rows/s", rows / seconds,
                    "raw scan of the rows by the engine", rows / scan_seconds),
        BenchResult(f"{name}: peak memory", "MB", peak / 1e6,
                    "every row's analysed columns held at once", columns_bytes / 1e6),
        BenchResult(f"injected episodes found ({len(events)} events in all)", "episodes",
                    float(found), "injected", float(len(injected))),
    ]
