"""What a user could run instead of ``observe ingest``: the engine's own inserts of a file
of JSON lines, with no checks (the ingest benchmark's baselines).

* :func:`raw_insert`: each line as it is, into a table of lines (ClickHouse's
  ``LineAsString``): the least any ingest of those bytes can cost;
* :func:`typed_insert`: ClickHouse's ``JSONEachRow`` parsing each line into typed
  columns, the members the store reads with the store's own types: no check of types or
  values, no de-duplication, neither the line nor a row per feature kept. What a user
  who loads measurements into ClickHouse by hand would write.
"""

from __future__ import annotations

from pathlib import Path

from noisewall.observatory.engine import ChdbEngine, sql_string
from noisewall.observatory.ingest_sql import LINE_COLUMNS


def raw_insert(engine: ChdbEngine, path: Path) -> int:
    """Insert every line of ``path`` unparsed; returns how many lines."""
    engine.execute("CREATE TABLE IF NOT EXISTS baseline_lines (n UInt64, line String) "
                   "ENGINE = MergeTree ORDER BY n")
    engine.execute(f"INSERT INTO baseline_lines SELECT rowNumberInAllBlocks() + 1, line "
                   f"FROM file({sql_string(str(path))}, LineAsString)")
    return _count(engine, "baseline_lines")


def typed_insert(engine: ChdbEngine, path: Path) -> int:
    """Parse every line of ``path`` into typed columns and insert them; returns how many."""
    engine.execute(f"CREATE TABLE IF NOT EXISTS baseline_typed ({LINE_COLUMNS}) "
                   "ENGINE = MergeTree ORDER BY tuple()")
    engine.execute(f"INSERT INTO baseline_typed SELECT * FROM file("
                   f"{sql_string(str(path))}, JSONEachRow, {sql_string(LINE_COLUMNS)}) "
                   "SETTINGS input_format_skip_unknown_fields = 1")
    return _count(engine, "baseline_typed")


def _count(engine: ChdbEngine, table: str) -> int:
    ((n,),) = engine.rows(f"SELECT count() FROM {table}")
    return int(n)
