"""The SQLite store of noisewall before ClickHouse: migrated from, and the benchmarks' baseline.

Idempotent on measurement id, parsing each line in Python.

Two tables matter:

* ``measurements``: one row per measurement id with its time series key and
  the measurement's JSON as received (zlib-compressed), so nothing the probe wrote is lost;
* ``results``: one compact row per (series, time, measurement) -- ok flag,
  failure code, throughput -- clustered by series and time, which is all the
  detector reads.

Ingest streams its input and commits in batches; a bad line becomes a
:class:`LineError` (source, line number, reason), a file that cannot be read a
:class:`FileError`, and the rest goes on.
"""

from __future__ import annotations

import itertools
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisewall.observatory.inputs import SourceError, expand, read_items
from noisewall.observatory.measurement import ParsedMeasurement, parse_line, parse_measurement
from noisewall.observatory.rows import MeasurementError, UnsupportedTest
from noisewall.observatory.store_types import (
    FileError,
    IngestReport,
    LineError,
    SeriesColumns,
    SeriesKey,
    SeriesRows,
    StoreError,
    duplicate_error,
)

SCHEMA_VERSION = 1
BATCH = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    digest BLOB NOT NULL,
    t REAL NOT NULL,
    network TEXT NOT NULL,
    vantage TEXT NOT NULL,
    test_name TEXT NOT NULL,
    round INTEGER,
    source TEXT NOT NULL,
    line INTEGER NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    network TEXT NOT NULL,
    vantage TEXT NOT NULL,
    feature TEXT NOT NULL,
    UNIQUE (network, vantage, feature)
);
CREATE TABLE IF NOT EXISTS failures (id INTEGER PRIMARY KEY, failure TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS results (
    series INTEGER NOT NULL,
    t REAL NOT NULL,
    measurement INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    failure INTEGER,
    kbps REAL,
    PRIMARY KEY (series, t, measurement)
) WITHOUT ROWID;
"""


_Item = Mapping[str, Any] | bytes | str | MeasurementError


def _parse(item: _Item) -> ParsedMeasurement:
    if isinstance(item, MeasurementError):
        raise item
    if isinstance(item, (bytes, str)):
        return parse_line(item)
    return parse_measurement(dict(item))


@dataclass(frozen=True, slots=True)
class _Pending:
    parsed: ParsedMeasurement
    source: str
    line: int


class SqliteStore:
    """A SQLite measurement store (WAL); use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable measurement store ({exc})") from None
        self._series: dict[tuple[str, str, str], int] = {}
        self._failures: dict[str, int] = {}

    def _check_version(self) -> None:
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
        (version,) = self._db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version != str(SCHEMA_VERSION):
            raise StoreError(f"{self.path}: schema version {version}, this noisewall reads "
                             f"{SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ingest ---------------------------------------------------------------------------------

    def ingest_files(self, paths: Iterable[str | Path]) -> IngestReport:
        """Ingest files, directories or ``-`` (see :mod:`.inputs`), streaming.

        A file that cannot be read is a :class:`FileError`; the other files are
        still ingested: ingest is idempotent, so the caller can fix the file and
        run it again.
        """
        report = IngestReport()
        for source in expand(paths):
            try:
                self._ingest(((source, n, item) for n, item in read_items(source)), report)
            except SourceError as exc:
                report.file_errors.append(FileError(source, str(exc)))
        return report

    def ingest_lines(self, lines: Iterable[bytes | str], source: str = "<lines>") -> IngestReport:
        """Ingest JSON lines from any iterable (numbered from 1 in errors)."""
        report = IngestReport()
        self._ingest(((source, n, line) for n, line in enumerate(lines, 1)), report)
        return report

    def ingest_measurements(self, measurements: Iterable[Mapping[str, Any] | bytes | str],
                            source: str = "<api>") -> IngestReport:
        """Ingest measurements given as decoded dicts or JSON lines (the lab's entry point)."""
        report = IngestReport()
        self._ingest(((source, n, m) for n, m in enumerate(measurements, 1)), report)
        return report

    def _ingest(self, items: Iterator[tuple[str, int, _Item]], report: IngestReport) -> None:
        batch: list[_Pending] = []
        sources: set[str] = set()
        try:
            for source, number, item in items:
                sources.add(source)
                if isinstance(item, (bytes, str)) and not item.strip():
                    continue
                report.lines += 1
                try:
                    parsed = _parse(item)
                except UnsupportedTest as exc:
                    report.skipped[exc.test_name] += 1
                    continue
                except MeasurementError as exc:
                    report.errors.append(LineError(source, number, str(exc)))
                    continue
                batch.append(_Pending(parsed, source, number))
                if len(batch) >= BATCH:
                    self._commit(batch, report, sources)
                    batch = []
        except SourceError:
            # What was read before the source failed is stored: a rerun skips it.
            if batch:
                self._commit(batch, report, sources)
            raise
        if batch:
            self._commit(batch, report, sources)

    def _commit(self, batch: list[_Pending], report: IngestReport, sources: set[str]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            known = self._known([p.parsed.id for p in batch])
            (next_row,) = db.execute("SELECT coalesce(max(rowid), 0) + 1 FROM measurements"
                                     ).fetchone()
            measurement_rows = []
            result_rows = []
            for pending in batch:
                parsed = pending.parsed
                if parsed.id in known:
                    error = duplicate_error(parsed.id, parsed.digest,
                                            (pending.source, pending.line), known[parsed.id],
                                            sources)
                    if error is None:
                        report.already_stored += 1
                    else:
                        report.errors.append(error)
                    continue
                known[parsed.id] = (parsed.digest, pending.source, pending.line)
                measurement_rows.append((
                    next_row, parsed.id, parsed.digest, parsed.time, parsed.network,
                    parsed.vantage, parsed.test_name, parsed.round, pending.source,
                    pending.line, zlib.compress(parsed.raw, 1)))
                for row in parsed.rows:
                    series = self._series_id(parsed.network, parsed.vantage, row.feature)
                    failure = None if row.failure is None else self._failure_id(row.failure)
                    result_rows.append((series, parsed.time, next_row, int(row.ok), failure,
                                        row.throughput_kbps))
                next_row += 1
            db.executemany("INSERT INTO measurements VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           measurement_rows)
            db.executemany("INSERT INTO results VALUES (?,?,?,?,?,?)", result_rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            # Ids handed out inside the rolled-back transaction may not exist any more.
            self._series.clear()
            self._failures.clear()
            raise
        report.stored += len(measurement_rows)

    def _known(self, ids: list[str]) -> dict[str, tuple[bytes, str, int]]:
        known: dict[str, tuple[bytes, str, int]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for mid, digest, source, line in self._db.execute(
                    f"SELECT id, digest, source, line FROM measurements "  # noqa: S608
                    f"WHERE id IN ({marks})", chunk):
                known[mid] = (digest, source, line)
        return known

    def _series_id(self, network: str, vantage: str, feature: str) -> int:
        key = (network, vantage, feature)
        found = self._series.get(key)
        if found is None:
            self._db.execute("INSERT OR IGNORE INTO series (network, vantage, feature) "
                             "VALUES (?,?,?)", key)
            (found,) = self._db.execute(
                "SELECT id FROM series WHERE network = ? AND vantage = ? AND feature = ?",
                key).fetchone()
            self._series[key] = found
        return found

    def _failure_id(self, failure: str) -> int:
        found = self._failures.get(failure)
        if found is None:
            self._db.execute("INSERT OR IGNORE INTO failures (failure) VALUES (?)", (failure,))
            (found,) = self._db.execute("SELECT id FROM failures WHERE failure = ?",
                                        (failure,)).fetchone()
            self._failures[failure] = found
        return found

    # reading --------------------------------------------------------------------------------

    def series(self) -> list[SeriesKey]:
        """Every series in the store, sorted."""
        return [SeriesKey(*row) for row in self._db.execute(
            "SELECT network, vantage, feature FROM series ORDER BY network, vantage, feature")]

    def rows(self, key: SeriesKey, *, since: float | None = None,
             until: float | None = None) -> SeriesRows:
        """One series in time order, optionally limited to ``since <= t < until``."""
        found = self._db.execute(
            "SELECT id FROM series WHERE network = ? AND vantage = ? AND feature = ?",
            (key.network, key.vantage, key.feature)).fetchone()
        names = dict(self._db.execute("SELECT id, failure FROM failures").fetchall())
        times: list[float] = []
        oks: list[bool] = []
        failures: list[str | None] = []
        kbps: list[float | None] = []
        if found is not None:
            cursor = self._db.execute(
                "SELECT t, ok, failure, kbps FROM results WHERE series = ? AND t >= ? AND t < ? "
                "ORDER BY t, measurement",
                (found[0], -1e300 if since is None else since, 1e300 if until is None else until))
            for t, ok, failure, rate in cursor:
                times.append(t)
                oks.append(bool(ok))
                failures.append(None if failure is None else names[failure])
                kbps.append(rate)
        return SeriesRows(key, times, oks, failures, kbps)

    def series_groups(self, *, since: float | None = None,
                      until: float | None = None) -> Iterator[list[SeriesColumns]]:
        """Every series with rows in ``[since, until)``, one (network, feature) group at a time."""
        keys = sorted(self.series(), key=lambda k: (k.network, k.feature, k.vantage))
        for _, members in itertools.groupby(keys, key=lambda k: (k.network, k.feature)):
            group = [SeriesColumns.of(rows) for rows in (
                self.rows(key, since=since, until=until) for key in members) if rows.times]
            if group:
                yield group

    def count(self) -> int:
        """Stored measurements."""
        (n,) = self._db.execute("SELECT count(*) FROM measurements").fetchone()
        return int(n)

    def time_range(self) -> tuple[float, float] | None:
        """Earliest and latest measurement time, or None for an empty store."""
        low, high = self._db.execute("SELECT min(t), max(t) FROM measurements").fetchone()
        return None if low is None else (float(low), float(high))

    def scan_results(self) -> int:
        """Read every result row once and return how many (the benchmark's raw baseline)."""
        n = 0
        for _ in self._db.execute("SELECT series, t, ok, failure, kbps FROM results"):
            n += 1
        return n

    def raw_measurements(self) -> Iterator[bytes]:
        """Every stored measurement's JSON, in the order stored (what a migration reads)."""
        for (raw,) in self._db.execute("SELECT raw FROM measurements ORDER BY rowid"):
            yield zlib.decompress(raw)

    def raw_measurement(self, measurement_id: str) -> bytes | None:
        """The stored JSON of one measurement."""
        row = self._db.execute("SELECT raw FROM measurements WHERE id = ?",
                               (measurement_id,)).fetchone()
        return None if row is None else zlib.decompress(row[0])
