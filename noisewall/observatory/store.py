"""The measurement store: ClickHouse (chDB in-process on a folder), idempotent on measurement id.

Two tables matter:

* ``measurements``: one row per measurement id with its time series key and
  the measurement's JSON as received (ZSTD-compressed), so nothing is lost;
* ``results``: one row per (series, time, measurement) -- ok flag, failure,
  throughput -- sorted by series and time, which is all the detector reads.

Ingest streams its input in batches; Python only cuts lines (and gunzips);
the engine parses and checks them (:mod:`.ingest_sql`) and extracts the
rows. A line the engine refuses becomes a :class:`LineError` with the precise
reason (:func:`.measurement.parse_line` explains it), a file that cannot be
read a :class:`FileError`, a test that is not analysed a count in
:attr:`IngestReport.skipped`; the rest goes on. A batch's two tables are written
at once; a batch cut short by a crash is made whole by ingesting the same source
again, which writes the lines it finds stored from that very place once more
(both tables drop repeated rows when they merge, and reads see them merged).
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from noisewall.observatory.engine import (
    ChdbEngine,
    EngineError,
    block_array,
    line_array,
    sql_string,
)
from noisewall.observatory.ingest_sql import (
    fast_results_select,
    fast_select,
    parsed_select,
    results_select,
)
from noisewall.observatory.inputs import Item, LineBlock, SourceError, expand, read_blocks
from noisewall.observatory.measurement import canonical_json, parse_line
from noisewall.observatory.rows import MeasurementError
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
from noisewall.observatory.synthetic import SyntheticNetwork, synthetic_sql

__all__ = ["EXPORT_FORMATS", "ExportFormat", "FileError", "IngestReport", "LineError",
           "MeasurementStore", "SeriesKey", "SeriesRows", "StoreError", "remove_store"]

ExportFormat = Literal["jsonl", "csv", "parquet"]
#: ClickHouse's output format for each export format.
EXPORT_FORMATS: dict[str, str] = {"jsonl": "JSONEachRow", "csv": "CSVWithNames",
                                  "parquet": "Parquet"}
SCHEMA_VERSION = "3"
BATCH_LINES = 50_000
BATCH_BYTES = 128 * 1024 * 1024
#: Result rows read at once for analysis (about 30 MB of columns).
ANALYSIS_BATCH_ROWS = 1_000_000
_MARKER = "noisewall-store"
_DIGEST = "FixedString(16) ALIAS sipHash128(raw)"
#: Each earlier schema version and the statements that bring a store of it to the next.
_MIGRATIONS = {
    "2": ("ALTER TABLE measurements DROP COLUMN digest SETTINGS mutations_sync = 2",
          f"ALTER TABLE measurements ADD COLUMN digest {_DIGEST} AFTER id"),
}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key String, value String) "
    "ENGINE = ReplacingMergeTree ORDER BY key",
    "CREATE TABLE IF NOT EXISTS measurements (id String, "
    # The line's digest tells a measurement ingested again from a different one under the same
    # id: worked out from the stored line when it is read, not at every insert.
    f"digest {_DIGEST}, t Float64, "
    "network LowCardinality(String), vantage LowCardinality(String), "
    "test_name LowCardinality(String), round Nullable(Int64), source String, line UInt64, "
    "raw String CODEC(ZSTD(1))) ENGINE = ReplacingMergeTree ORDER BY id",
    "CREATE TABLE IF NOT EXISTS results (network LowCardinality(String), "
    "vantage LowCardinality(String), feature LowCardinality(String), t Float64, "
    "measurement String, ok UInt8, failure LowCardinality(Nullable(String)), "
    "kbps Nullable(Float64)) ENGINE = ReplacingMergeTree "
    "ORDER BY (network, vantage, feature, t, measurement)",
)


def remove_store(path: str | Path) -> None:
    """Delete the store at ``path`` if there is one (a folder that holds a store, nothing else)."""
    folder = Path(path)
    if (folder / _MARKER).is_file():
        shutil.rmtree(folder)


class MeasurementStore:
    """A ClickHouse measurement store in the folder ``path``; a context manager.

    One process at a time: a second one gets a :class:`StoreError` saying so.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: not a measurement store (a store is a folder; an "
                             "SQLite store of an earlier noisewall: noisewall observe migrate)")
        marker = self.path / _MARKER
        if self.path.is_dir() and any(self.path.iterdir()) and not marker.is_file():
            raise StoreError(f"{self.path}: a folder that is not a measurement store")
        if not marker.is_file():  # marked before the engine writes: a second process sees a store
            self.path.mkdir(parents=True, exist_ok=True)
            marker.write_text(SCHEMA_VERSION + "\n")
        try:
            self._engine = ChdbEngine(self.path)
        except EngineError as exc:
            raise StoreError(str(exc)) from None
        try:
            for statement in _SCHEMA:
                self._engine.execute(statement)
            self._check_version()
        except EngineError as exc:
            self._engine.close()
            raise StoreError(f"{self.path}: not a usable measurement store ({exc})") from None
        self._batches = itertools.count()
        self._parsing: ChdbEngine | None = None

    def _check_version(self) -> None:
        found = self._engine.rows("SELECT value FROM meta FINAL WHERE key = 'schema_version'")
        if not found:
            self._engine.execute(f"INSERT INTO meta VALUES ('schema_version', "
                                 f"{sql_string(SCHEMA_VERSION)})")
            return
        version = found[0][0]
        while version in _MIGRATIONS:
            for statement in _MIGRATIONS[version]:
                self._engine.execute(statement)
            version = str(int(version) + 1)
            self._engine.execute(f"INSERT INTO meta VALUES ('schema_version', "
                                 f"{sql_string(version)})")
        if version != SCHEMA_VERSION:
            raise EngineError(f"schema version {version}, this noisewall reads "
                              f"{SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the engine."""
        if self._parsing is not None:
            self._parsing.close()
            self._parsing = None
        self._engine.close()

    def __enter__(self) -> MeasurementStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ingest ---------------------------------------------------------------------------------

    def ingest_files(self, paths: Iterable[str | Path]) -> IngestReport:
        """Ingest files, directories or ``-`` (see :mod:`.inputs`), streaming.

        A file that cannot be read (to the end) is one :class:`FileError`; what
        was read before stays stored, the other files are still ingested, and
        ingest is idempotent, so the caller can fix the file and run it again.
        """
        report = IngestReport()
        sources: set[str] = set()
        for source in expand(paths):
            sources.add(source)
            try:
                self._ingest_source(source, read_blocks(source), report, sources)
            except SourceError as exc:
                report.file_errors.append(FileError(source, str(exc)))
        return report

    def ingest_lines(self, lines: Iterable[bytes | str], source: str = "<lines>") -> IngestReport:
        """Ingest JSON lines from any iterable (numbered from 1 in errors)."""
        return self.ingest_measurements(lines, source)

    def ingest_measurements(self, measurements: Iterable[Mapping[str, Any] | bytes | str],
                            source: str = "<api>") -> IngestReport:
        """Ingest measurements given as decoded dicts or JSON lines (the lab's entry point)."""
        report = IngestReport()
        self._ingest_source(source, enumerate(measurements, 1), report, {source})
        return report

    def _ingest_source(self, source: str, items: Iterator[tuple[int, Item | LineBlock | str]],
                       report: IngestReport, sources: set[str]) -> None:
        """Ingest one source's batches, three at a time in a pipeline.

        This thread reads the next batch while a second engine connection parses the one
        before and the store's own connection stores the one before that: the engine
        lets go of the GIL, and its two connections run at once. Batches are parsed in
        order and stored in order, each after the one before is stored.
        """
        stop = threading.Event()
        with (ThreadPoolExecutor(max_workers=1, thread_name_prefix="noisewall-parse") as parsing,
              ThreadPoolExecutor(max_workers=1, thread_name_prefix="noisewall-store") as storing):

            def parse(batch: _Batch) -> _Parsed:
                return self._parse(source, batch, stop)

            def store(parsed: Future[_Parsed]) -> None:
                self._store(source, parsed.result(), report, sources, stop)

            in_flight: deque[Future[None]] = deque()
            try:
                try:
                    for batch in _batches(source, items, report):
                        in_flight.append(storing.submit(store, parsing.submit(parse, batch)))
                        if len(in_flight) > 2:
                            in_flight.popleft().result()
                finally:  # what was read before a source failed is stored: a rerun skips it
                    while in_flight:
                        in_flight.popleft().result()
            except BaseException:
                stop.set()
                raise

    def _parser(self) -> ChdbEngine:
        """The second engine connection, which parses batches while the store's own stores."""
        if self._parsing is None:
            self._parsing = self._engine.another_connection()
        return self._parsing

    def _parse(self, source: str, batch: _Batch, stop: threading.Event) -> _Parsed:
        """Parse one batch into its tables: the fast path, and the full checks on the lines
        it refuses (whose errors and skipped tests the batch keeps).
        """
        parsed = _Parsed(f"batch_{next(self._batches)}", batch.errors)
        if stop.is_set() or not batch.count:
            return parsed
        engine = self._parser()
        raw, fast, slow = parsed.table("raw"), parsed.table("fast"), parsed.table("slow")
        try:
            engine.execute(f"CREATE TABLE {raw} (n UInt64, data String) ENGINE = Memory")
            engine.load_lines(raw, batch.numbers(), batch.column(), strip=True)
            engine.execute(f"CREATE TABLE {fast} ENGINE = Memory AS {fast_select(raw)}")
            ((refused,),) = engine.rows(f"SELECT countIf(NOT fast) FROM {fast}")
            if refused:
                engine.execute(f"CREATE TABLE {slow} ENGINE = Memory AS " + parsed_select(
                    f"(SELECT n, data FROM {fast} WHERE NOT fast)", source))
                for test_name, count in engine.rows(
                        f"SELECT test_name, count() FROM {slow} WHERE kind = 'skip' "
                        "GROUP BY test_name"):
                    parsed.skipped[test_name] += count
                parsed.errors.extend(
                    LineError(source, n, _explain(batch.text(n))) for (n,) in engine.rows(
                        f"SELECT n FROM {slow} WHERE kind = 'error' ORDER BY n"))
        except BaseException:
            for table in (raw, fast, slow):
                engine.execute(f"DROP TABLE IF EXISTS {table}")
            raise
        engine.execute(f"DROP TABLE {raw}")
        parsed.fast, parsed.slow = fast, slow if refused else None
        return parsed

    def _store(self, source: str, parsed: _Parsed, report: IngestReport,
               sources: set[str], stop: threading.Event) -> None:
        """Store one parsed batch and drop its tables; its errors join the report in line order."""
        engine = self._engine
        fast, slow = parsed.fast, parsed.slow
        known, dropped, incoming, to_results, to_measurements = (
            parsed.table(part) for part in ("known", "dropped", "incoming", "to_results",
                                            "to_measurements"))
        first_error = len(report.errors)
        report.errors.extend(parsed.errors)
        report.skipped.update(parsed.skipped)
        try:
            if fast is None or stop.is_set():
                return
            # Digests only of the lines the de-duplication reads (their ids were seen before).
            ok = [f"SELECT n, id, sipHash128(data) AS digest FROM {fast} WHERE fast"]
            if slow is not None:
                ok.append(f"SELECT n, id, digest FROM {slow} WHERE kind = 'ok'")
            accepted = "(" + " UNION ALL ".join(ok) + ")"
            engine.execute(f"CREATE TABLE {dropped} (n UInt64, data String) ENGINE = Memory")
            not_stored, rewritten = self._not_to_store(accepted, known, source, report,
                                                       sources)
            if not_stored:
                engine.load_lines(dropped, not_stored, [b""] * len(not_stored))
            keep = f"n NOT IN (SELECT n FROM {dropped})"
            # No merge of each inserted block on its own: the batch holds no repeated key
            # (de-duplicated above), and reads merge with FINAL anyway.
            no_merge = "optimize_on_insert = 0"
            # The fast path's lines reach both tables in one pass: the engine writes the two
            # at once (a view each on a table that keeps nothing). Which one lands first is
            # not fixed, so a batch cut short by a crash can leave measurements without their
            # results: ingesting the same source again rewrites its lines (see _not_to_store).
            engine.execute(f"CREATE TABLE {incoming} ENGINE = Null AS SELECT *, "
                           f"{sql_string(source)} AS source FROM {fast} WHERE 0")
            engine.execute(f"CREATE MATERIALIZED VIEW {to_results} TO results AS "
                           f"{fast_results_select(incoming)}")
            engine.execute(f"CREATE MATERIALIZED VIEW {to_measurements} TO measurements AS "
                           "SELECT id, t, network, vantage, test_name, round, source, "
                           f"n AS line, data AS raw FROM {incoming}")
            engine.execute(f"INSERT INTO {incoming} SELECT *, {sql_string(source)} FROM {fast} "
                           f"WHERE fast AND {keep} "
                           f"SETTINGS {no_merge}, parallel_view_processing = 1")
            if slow is not None:  # results first: a crash in between leaves no measurement
                engine.execute("INSERT INTO results " + results_select(
                    slow, f"(SELECT n FROM {slow} WHERE kind = 'ok' AND {keep})")
                    + f"\nSETTINGS {no_merge}")
                engine.execute(
                    f"INSERT INTO measurements SELECT id, t, network, vantage, "
                    f"test_name, round, source, n, data FROM {slow} WHERE kind = 'ok' AND {keep} "
                    f"SETTINGS {no_merge}")
            ((count,),) = engine.rows(f"SELECT count() FROM {accepted}")
            report.stored += count - len(not_stored) - rewritten
        finally:
            for table in (to_results, to_measurements, incoming, fast, slow, known, dropped):
                if table is not None:
                    engine.execute(f"DROP TABLE IF EXISTS {table}")
            report.errors[first_error:] = sorted(report.errors[first_error:],
                                                 key=lambda error: error.line)

    def _not_to_store(self, accepted: str, known_table: str, source: str, report: IngestReport,
                      sources: set[str]) -> tuple[list[int], int]:
        """The accepted lines (rows ``n, id, digest``) not to store: ids stored before or
        seen earlier in this ingest. Only the lines whose id is one of those are read here.

        Also how many lines are stored again although stored before: a line stored
        from this very place (source and line) is written again, identical, so that a
        batch a crash cut short is made whole by ingesting its source again (reads
        merge the copies).
        """
        engine = self._engine
        # The batch's ids are spread over the whole store: looking them up reads every id
        # stored, so it is done once, into ``known_table``.
        engine.execute(f"CREATE TABLE {known_table} ENGINE = Memory AS SELECT id, digest, "
                       f"source, line FROM measurements WHERE id IN (SELECT id FROM {accepted})")
        known: dict[str, tuple[bytes, str, int]] = {
            mid: (digest, stored_source, line) for mid, digest, stored_source, line in engine.rows(
                f"SELECT id, digest, source, line FROM {known_table}")}
        stored_before = set(known)
        not_stored = []
        rewritten = 0
        for n, mid, digest in engine.rows(
                f"SELECT n, id, digest FROM {accepted} WHERE id IN (SELECT id FROM {known_table}) "
                f"OR id IN (SELECT id FROM {accepted} GROUP BY id HAVING count() > 1) "
                "ORDER BY n"):
            if mid in known:
                error = duplicate_error(mid, digest, (source, n), known[mid], sources)
                if error is None:
                    report.already_stored += 1
                    if mid in stored_before and known[mid][1:] == (source, n):
                        rewritten += 1
                        continue
                else:
                    report.errors.append(error)
                not_stored.append(n)
                continue
            known[mid] = (digest, source, n)
        return not_stored, rewritten

    # reading --------------------------------------------------------------------------------

    def series(self) -> list[SeriesKey]:
        """Every series in the store, sorted."""
        return [SeriesKey(*row) for row in self._engine.rows(
            "SELECT DISTINCT network, vantage, feature FROM results "
            "ORDER BY network, vantage, feature")]

    def rows(self, key: SeriesKey, *, since: float | None = None,
             until: float | None = None) -> SeriesRows:
        """One series in time order, optionally limited to ``since <= t < until``."""
        where = (f"network = {sql_string(key.network)} AND vantage = {sql_string(key.vantage)} "
                 f"AND feature = {sql_string(key.feature)}")
        return self._read(where, since, until).get(key, SeriesRows(key, [], [], [], []))

    def series_groups(self, *, since: float | None = None,
                      until: float | None = None) -> Iterator[list[SeriesColumns]]:
        """Every series with rows in ``[since, until)``, one (network, feature) group at a time.

        Streamed: the rows are read a batch at a time (whole networks, or some of
        one network's features, about :data:`ANALYSIS_BATCH_ROWS` rows, more when a
        single group is larger) as NumPy columns, so memory holds one batch, not the
        store. Each series as :meth:`rows` gives it (merged, in time order).
        """
        window = _time_window(since, until)
        for condition in self._analysis_batches(window):
            yield from self._read_batch(condition, window)

    def _analysis_batches(self, window: str) -> Iterator[str]:
        """SQL conditions that cut the results into batches of whole (network, feature) groups."""
        # Sizes as stored, repeats not merged away yet: they only cut the batches.
        sizes = self._engine.rows(f"SELECT network, feature, count() FROM results WHERE 1{window} "
                                  "GROUP BY network, feature ORDER BY network, feature")
        networks: list[str] = []
        size = 0
        for network, members in itertools.groupby(sizes, key=lambda row: str(row[0])):
            groups = [(str(feature), int(n)) for _, feature, n in members]
            total = sum(n for _, n in groups)
            if networks and size + total > ANALYSIS_BATCH_ROWS:
                yield f"network IN ({', '.join(map(sql_string, networks))})"
                networks, size = [], 0
            if total <= ANALYSIS_BATCH_ROWS:
                networks.append(network)
                size += total
                continue
            features: list[str] = []  # a network larger than a batch: some features at a time
            size = 0
            for feature, n in groups:
                if features and size + n > ANALYSIS_BATCH_ROWS:
                    yield (f"network = {sql_string(network)} "
                           f"AND feature IN ({', '.join(map(sql_string, features))})")
                    features, size = [], 0
                features.append(feature)
                size += n
            yield (f"network = {sql_string(network)} "
                   f"AND feature IN ({', '.join(map(sql_string, features))})")
            size = 0
        if networks:
            yield f"network IN ({', '.join(map(sql_string, networks))})"

    def _read_batch(self, condition: str, window: str) -> Iterator[list[SeriesColumns]]:
        """The groups of one batch, read in one query."""
        table = self._engine.table(
            "SELECT network, vantage, feature, t, toBool(ok) AS ok, failure, kbps "
            f"FROM results FINAL WHERE {condition}{window} "
            "ORDER BY network, vantage, feature, t, measurement "
            # the key and failure columns come as codes into small dictionaries
            "SETTINGS output_format_arrow_low_cardinality_as_dictionary = 1")
        if table.num_rows == 0:
            return
        table = table.unify_dictionaries().combine_chunks()
        network, vantage, feature, failure = (
            table.column(name).chunk(0) for name in ("network", "vantage", "feature", "failure"))
        series = ((network.indices.to_numpy().astype(np.int64) * len(vantage.dictionary)
                   + vantage.indices.to_numpy()) * len(feature.dictionary)
                  + feature.indices.to_numpy())
        bounds = [0, *(np.flatnonzero(np.diff(series)) + 1).tolist(), len(series)]
        # A NULL in the dictionary (not only a null code) is no failure either: -1. The
        # last slot maps code -1 to itself.
        listed = failure.dictionary.to_pylist()
        kept = [i for i, name in enumerate(listed) if name is not None]
        recode = np.full(len(listed) + 1, -1, dtype=np.int32)
        recode[kept] = np.arange(len(kept), dtype=np.int32)
        codes = recode[failure.indices.fill_null(-1).to_numpy()]
        names = tuple(str(listed[i]) for i in kept)
        times = table.column("t").to_numpy().astype(np.float64, copy=False)
        oks = table.column("ok").to_numpy().astype(np.bool_, copy=False)
        kbps = table.column("kbps").fill_null(np.nan).to_numpy().astype(np.float64, copy=False)
        groups: dict[tuple[str, str], list[SeriesColumns]] = {}
        for lo, hi in itertools.pairwise(bounds):
            key = SeriesKey(network.dictionary[network.indices[lo].as_py()].as_py(),
                            vantage.dictionary[vantage.indices[lo].as_py()].as_py(),
                            feature.dictionary[feature.indices[lo].as_py()].as_py())
            groups.setdefault((key.network, key.feature), []).append(SeriesColumns(
                key, times[lo:hi], oks[lo:hi], codes[lo:hi], names, kbps[lo:hi]))
        for _, group in sorted(groups.items()):
            yield group

    def _read(self, where: str, since: float | None,
              until: float | None) -> dict[SeriesKey, SeriesRows]:
        window = _time_window(since, until)
        order = "ORDER BY network, vantage, feature"
        # The series and their sizes first, then the rows in the same order: no key per row.
        sizes = self._engine.rows(
            f"SELECT network, vantage, feature, count() FROM results FINAL "
            f"WHERE {where}{window} GROUP BY network, vantage, feature {order}")
        table = self._engine.table(
            f"SELECT t, toBool(ok), failure, kbps FROM results FINAL WHERE {where}{window} "
            f"{order}, t, measurement")
        times, oks, failures, kbps = (column.to_pylist() for column in table.columns)
        found: dict[SeriesKey, SeriesRows] = {}
        start = 0
        for network, vantage, feature, size in sizes:
            key = SeriesKey(network, vantage, feature)
            end = start + size
            found[key] = SeriesRows(key, times[start:end], oks[start:end], failures[start:end],
                                    kbps[start:end])
            start = end
        return found

    def export(self, path: str | Path, fmt: ExportFormat, *, since: float | None = None,
               until: float | None = None) -> int:
        """Write the per-feature results to ``path`` (``jsonl``, ``csv`` or ``parquet``).

        One row per (network, vantage, feature, measurement), in series and time order;
        written to ``path.partial`` and renamed, so a reader never sees half a file.
        Returns the number of rows.
        """
        target = Path(path)
        partial = target.with_name(target.name + ".partial")
        where = _time_window(since, until)
        columns = ("network, vantage, feature, "
                   "formatDateTime(toDateTime(toUInt32(t), 'UTC'), '%Y-%m-%d %H:%i:%S') "
                   "AS time_utc, t AS time, measurement, toBool(ok) AS ok, failure, "
                   "kbps AS throughput_kbps")
        self._engine.execute(
            f"SELECT {columns} FROM results FINAL WHERE 1{where} "
            f"ORDER BY network, vantage, feature, t, measurement "
            f"INTO OUTFILE {sql_string(str(partial))} TRUNCATE FORMAT {EXPORT_FORMATS[fmt]} "
            "SETTINGS format_csv_null_representation = '', "
            "output_format_json_quote_64bit_integers = 0")
        partial.replace(target)
        ((n,),) = self._engine.rows(f"SELECT count() FROM results FINAL WHERE 1{where}")
        return int(n)

    def raw_measurements_of(self, test_name: str, *, since: float | None = None,
                            until: float | None = None) -> list[bytes]:
        """The stored JSON of every measurement of ``test_name`` in ``[since, until)``, by time."""
        window = _time_window(since, until)
        return [raw if isinstance(raw, bytes) else str(raw).encode() for (raw,) in
                self._engine.rows(f"SELECT raw FROM measurements FINAL WHERE test_name = "
                                  f"{sql_string(test_name)}{window} ORDER BY t, id")]

    def count(self) -> int:
        """Stored measurements."""
        ((n,),) = self._engine.rows("SELECT count() FROM measurements FINAL")
        return int(n)

    def time_range(self) -> tuple[float, float] | None:
        """Earliest and latest measurement time, or None for an empty store."""
        ((n, low, high),) = self._engine.rows("SELECT count(), min(t), max(t) FROM measurements")
        return None if n == 0 else (float(low), float(high))

    def scan_results(self) -> int:
        """Read the analysed columns of every result row once, as :meth:`series_groups` hands
        them over (Arrow, one network at a time), but as stored: no merge, no order.

        Returns how many rows (the benchmark's raw-scan baseline).
        """
        return sum(self._engine.table(
            f"SELECT t, ok, failure, kbps FROM results WHERE network = {sql_string(network)} "
            "SETTINGS output_format_arrow_low_cardinality_as_dictionary = 1").num_rows
            for (network,) in self._engine.rows("SELECT DISTINCT network FROM results"))

    def merge(self) -> None:
        """Merge the tables' inserts now, as the engine does in time (the benchmark's stores)."""
        for table in ("results", "measurements"):
            self._engine.execute(f"OPTIMIZE TABLE {table} FINAL")

    def insert_synthetic(self, networks: Sequence[SyntheticNetwork], *, rounds: int,
                         start: float, interval: float) -> int:
        """Write ``networks``' synthetic measurements in the engine, seeded 0, 1, ...

        What ingesting :func:`.synthetic.synthetic_measurements` would store, made by
        :func:`.synthetic.synthetic_sql` without JSON lines (the benchmark's large
        store). Returns the number of measurements written.
        """
        for seed, network in enumerate(networks):
            for statement in synthetic_sql(network, rounds=rounds, start=start,
                                           interval=interval, seed=seed):
                self._engine.execute(statement)
        return rounds * sum(len(network.vantages) for network in networks)

    def raw_measurement(self, measurement_id: str) -> bytes | None:
        """The stored JSON of one measurement."""
        found = self._engine.rows(
            f"SELECT raw FROM measurements WHERE id = {sql_string(measurement_id)} LIMIT 1")
        if not found:
            return None
        raw = found[0][0]
        return raw if isinstance(raw, bytes) else str(raw).encode()


def _time_window(since: float | None, until: float | None) -> str:
    """SQL conditions (each with a leading AND) for ``since <= t < until``."""
    return "".join(("" if since is None else f" AND t >= {float(since)!r}",
                    "" if until is None else f" AND t < {float(until)!r}"))


def _batches(source: str, items: Iterator[tuple[int, Item | LineBlock | str]],
             report: IngestReport) -> Iterator[_Batch]:
    """``items`` cut into batches of about :data:`BATCH_LINES` lines or :data:`BATCH_BYTES`.

    When the source fails part-way, what was read before is handed over first (a rerun
    skips what was stored), then the :class:`SourceError` is raised.
    """
    batch = _Batch()
    try:
        for number, item in items:
            if isinstance(item, LineBlock):
                report.lines += len(item) - item.blank
                batch.add_block(item)
            else:
                line = item.strip() if isinstance(item, bytes) else _line(item)
                if isinstance(line, MeasurementError):
                    report.lines += 1
                    batch.errors.append(LineError(source, number, str(line)))
                    continue
                if not line:
                    continue
                report.lines += 1
                batch.add_line(number, line)
            if batch.count >= BATCH_LINES or batch.size >= BATCH_BYTES:
                yield batch
                batch = _Batch()
    except SourceError:
        if batch.count or batch.errors:
            yield batch
        raise
    if batch.count or batch.errors:
        yield batch


@dataclass
class _Parsed:
    """A batch parsed into its tables (named from ``prefix``), waiting to be stored."""

    prefix: str
    errors: list[LineError]
    skipped: Counter[str] = field(default_factory=Counter)
    #: The fast path's table, None when nothing was parsed.
    fast: str | None = None
    #: The full checks' table, None when the fast path took every line.
    slow: str | None = None

    def table(self, part: str) -> str:
        """The name of one of the batch's tables."""
        return f"{self.prefix}_{part}"


class _Batch:
    """Lines cut for the engine, in order: blocks as read and single lines, with their numbers.

    A block's lines go to the engine as they were read (with line ends, and blank
    ones): the engine strips them and leaves the blank ones out, as :meth:`text` does.
    """

    def __init__(self) -> None:
        self._numbers: list[npt.NDArray[np.uint64]] = []
        self._columns: list[pa.LargeBinaryArray] = []
        self._line_numbers: list[int] = []
        self._lines: list[bytes] = []
        #: Lines refused while reading (too long, not a JSON value).
        self.errors: list[LineError] = []
        self.count = 0
        self.size = 0

    def add_line(self, number: int, line: bytes) -> None:
        """One line, stripped and not blank."""
        self._line_numbers.append(number)
        self._lines.append(line)
        self.count += 1
        self.size += len(line)

    def add_block(self, block: LineBlock) -> None:
        """A block of lines as read."""
        self._close_lines()
        self._numbers.append(np.arange(block.first, block.first + len(block), dtype=np.uint64))
        self._columns.append(block_array(block.data, block.offsets))
        self.count += len(block)
        self.size += int(block.offsets[-1] - block.offsets[0])

    def _close_lines(self) -> None:
        if self._lines:
            self._numbers.append(np.array(self._line_numbers, dtype=np.uint64))
            self._columns.append(line_array(self._lines))
            self._line_numbers, self._lines = [], []

    def numbers(self) -> npt.NDArray[np.uint64]:
        """Every line's number."""
        self._close_lines()
        return np.concatenate(self._numbers)

    def column(self) -> pa.ChunkedArray:
        """Every line, as read."""
        self._close_lines()
        return pa.chunked_array(self._columns, pa.large_binary())

    def text(self, number: int) -> bytes:
        """Line ``number``, stripped."""
        self._close_lines()
        for numbers, column in zip(self._numbers, self._columns, strict=True):
            i = int(np.searchsorted(numbers, number))
            if i < len(numbers) and numbers[i] == number:
                line = column[i].as_py()
                assert isinstance(line, bytes)
                return line.strip()
        raise KeyError(number)


def _line(item: Mapping[str, Any] | str | MeasurementError) -> bytes | MeasurementError:
    """A line of text, or a decoded measurement, as the bytes to store (bytes need only strip)."""
    if isinstance(item, MeasurementError):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass").strip()
    try:
        return canonical_json(item)
    except MeasurementError as exc:
        return exc
    except (TypeError, ValueError) as exc:  # NaN, infinity or a non-JSON value in the record
        return MeasurementError(f"not strict JSON: {exc}")


def _explain(line: bytes) -> str:
    """Why the engine refused ``line``, in the Python parser's words."""
    try:
        parse_line(line)
    except MeasurementError as exc:
        return str(exc)
    return "refused by the engine's checks: " + json.dumps(line[:80].decode("utf-8", "replace"))
