"""The observatory: store OONI-format measurements, detect blocking events, report them.

The lab's API (``path``: a folder, the ClickHouse store run in-process by chDB;
one process at a time holds it)::

    with MeasurementStore(path) as store:
        store.ingest_files(paths)                  # or ingest_measurements(store, dicts)
        events = analyze(store, load_config(None))
        write_html_report("report.html", store, events, ground_truth=[...])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from noisewall.observatory.config import DetectorConfig, load_config
from noisewall.observatory.episodes import Event, analyze, detect_series
from noisewall.observatory.measurement import parse_line, parse_measurement
from noisewall.observatory.report_html import GroundTruthBand, ReportTable, write_html_report
from noisewall.observatory.rows import MeasurementError
from noisewall.observatory.store import (
    FileError,
    IngestReport,
    LineError,
    MeasurementStore,
    SeriesKey,
)


def ingest_measurements(store: MeasurementStore,
                        measurements: Iterable[Mapping[str, Any] | bytes | str],
                        source: str = "<api>") -> IngestReport:
    """Store measurements given as dicts or JSON lines (see ``MeasurementStore``)."""
    return store.ingest_measurements(measurements, source)


__all__ = [
    "DetectorConfig",
    "Event",
    "FileError",
    "GroundTruthBand",
    "IngestReport",
    "LineError",
    "MeasurementError",
    "MeasurementStore",
    "ReportTable",
    "SeriesKey",
    "analyze",
    "detect_series",
    "ingest_measurements",
    "load_config",
    "parse_line",
    "parse_measurement",
    "write_html_report",
]
