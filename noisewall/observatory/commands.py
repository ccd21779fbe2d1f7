"""``noisewall observe``: ingest, analyze and report measurements."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import numpy as np

from noisewall.cli_options import json_option
from noisewall.observatory.config import DetectorConfig, load_config
from noisewall.observatory.episodes import Event
from noisewall.observatory.episodes import analyze as network_analysis
from noisewall.observatory.filtered import FilteredEvent
from noisewall.observatory.keyword_store import stored_filtered_events
from noisewall.observatory.report_html import (
    SeriesCounts,
    in_window,
    series_counts,
    write_html_report,
)
from noisewall.observatory.report_terminal import print_summary, summary_console
from noisewall.observatory.sqlite_store import SqliteStore
from noisewall.observatory.store import (
    EXPORT_FORMATS,
    ExportFormat,
    IngestReport,
    MeasurementStore,
)
from noisewall.observatory.store_types import SeriesColumns

DEFAULT_DB = "observatory.chdb"


class UtcTime(click.ParamType):  # type: ignore[type-arg]
    """``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM[:SS]`` (also with ``T``), UTC, as POSIX seconds."""

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not YYYY-MM-DD[ HH:MM:SS] (UTC)", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


db_option = click.option("--db", "db_path", default=DEFAULT_DB, show_default=True,
                         type=click.Path(file_okay=False),
                         help="The measurement store: a folder (ClickHouse in-process, chDB).")
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                             help="Detector parameters (YAML; see docs/observatory.md).")


@click.group()
def observe() -> None:
    """Store measurements, detect blocking / throttling / flapping / server-side filtering,
    and report a timeline."""


@observe.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@db_option
@json_option
def ingest(files: tuple[str, ...], db_path: str, as_json: bool) -> None:
    """Store measurements: FILES are .jsonl, .jsonl.gz, .json, .json.gz, folders of them, or -.

    Analysed: noisewall_messaging, noisewall_keyword_filtering (the keyword
    probe's) and OONI's whatsapp, signal, telegram and facebook_messenger tests;
    other tests are skipped with one line per test name. Idempotent: a
    measurement already stored is skipped. A bad line is reported on stderr
    with its file and line number (the first ten; the rest are counted by
    reason), a file that cannot be read (to the end) as one error naming the
    file, and the rest goes on; the exit status is 1 when any line or file
    was rejected.
    """
    with MeasurementStore(db_path) as store:
        report = store.ingest_files(files)
    _print_report(report, as_json)


def _print_report(report: IngestReport, as_json: bool) -> None:
    for file_error in report.file_errors:
        click.echo(f"noisewall: error: {file_error}", err=True)
    for line in report.error_lines():
        click.echo(f"noisewall: {line}", err=True)
    for line in report.skipped_lines():
        click.echo(f"noisewall: {line}", err=True)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        unread = len(report.file_errors)
        not_read = f", {unread} file{'s' if unread > 1 else ''} not read" if unread else ""
        click.echo(f"{report.stored} stored, {report.already_stored} already stored, "
                   f"{len(report.errors)} rejected ({report.lines} lines){not_read}")
    if report.errors or report.file_errors:
        raise SystemExit(1)


@observe.command()
@click.argument("sqlite_path", metavar="OLD.sqlite", type=click.Path(exists=True, dir_okay=False))
@db_option
@json_option
def migrate(sqlite_path: str, db_path: str, as_json: bool) -> None:
    """Copy an SQLite store of an earlier noisewall into the ClickHouse store (idempotent).

    Every measurement is read back as it was received and ingested again, so
    the new store holds exactly what a fresh ingest of the same files would.
    """
    with SqliteStore(sqlite_path) as old, MeasurementStore(db_path) as store:
        report = store.ingest_measurements(old.raw_measurements(), source=sqlite_path)
    _print_report(report, as_json)


@observe.command()
@db_option
@config_option
@click.option("--since", type=UtcTime(), help="Only measurements from this time (UTC).")
@click.option("--until", type=UtcTime(), help="Only measurements before this time (UTC).")
@json_option
def analyze(db_path: str, config_path: str | None, since: float | None, until: float | None,
            as_json: bool) -> None:
    """Detect blocked, throttled and intermittent features per network and vantage.

    Keyword measurements give ``filtered`` events: server-side filtering of a
    candidate (feature ``keyword:<id>`` or ``image:<id>``), per region (the
    vantage), onset per candidate.
    """
    config = load_config(config_path)
    counts: list[SeriesCounts] = []

    def count(rows: SeriesColumns) -> None:  # the summary's counts, as the analysis reads
        counts.append(SeriesCounts(rows.key, len(rows), int(np.count_nonzero(rows.ok))))

    with _open_existing(db_path) as store:
        events = run_analysis(store, config, since=since, until=until, on_series=count)
    if as_json:
        click.echo(json.dumps([e.as_json() for e in events], indent=2))
        return
    counts.sort(key=lambda c: (c.key.network, c.key.vantage, c.key.feature))
    print_summary(summary_console(), events, counts)


@observe.command()
@db_option
@config_option
@click.option("--html", "html_path", type=click.Path(dir_okay=False),
              help="Also write one self-contained HTML report here.")
@click.option("--since", type=UtcTime(), help="Report from this time (UTC).")
@click.option("--until", type=UtcTime(), help="Report up to this time (UTC).")
def report(db_path: str, config_path: str | None, html_path: str | None, since: float | None,
           until: float | None) -> None:
    """Summary table on the terminal and, with --html, a timeline report."""
    config = load_config(config_path)
    with _open_existing(db_path) as store:
        events = run_analysis(store, config)
        print_summary(summary_console(), in_window(events, since, until),
                      [c for c, _ in series_counts(store, since, until)])
        if html_path is not None:
            written = write_html_report(html_path, store, events, since=since, until=until)
            click.echo(f"report written to {written}", err=True)


@observe.command()
@db_option
@click.option("--format", "fmt", type=click.Choice(list(EXPORT_FORMATS)), required=True,
              help="jsonl (one JSON object a line), csv (with a header) or parquet.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="The file to write (replaced if it exists).")
@click.option("--since", type=UtcTime(), help="Only rows from this time (UTC).")
@click.option("--until", type=UtcTime(), help="Only rows before this time (UTC).")
def export(db_path: str, fmt: ExportFormat, out_path: str, since: float | None,
           until: float | None) -> None:
    """Write the per-feature results for your own notebooks.

    One row per feature of each measurement: network, vantage, feature,
    time_utc, time (POSIX seconds), measurement (its id), ok, failure,
    throughput_kbps; in series and time order.
    """
    with _open_existing(db_path) as store:
        rows = store.export(out_path, fmt, since=since, until=until)
    click.echo(f"{rows} rows written to {out_path}", err=True)


def run_analysis(store: MeasurementStore, config: DetectorConfig, *, since: float | None = None,
                 until: float | None = None,
                 on_series: Callable[[SeriesColumns], None] | None = None
                 ) -> list[Event | FilteredEvent]:
    """The network events and the keyword probe's ``filtered`` events, by onset.

    ``on_series`` sees each series as the analysis reads it.
    """
    events: list[Event | FilteredEvent] = [
        *network_analysis(store, config, since=since, until=until, on_series=on_series),
        *stored_filtered_events(store, since=since, until=until)]
    return sorted(events, key=lambda e: (e.onset, e.network, e.vantage, e.feature))


def _open_existing(db_path: str) -> MeasurementStore:
    if not Path(db_path).is_dir():
        raise click.ClickException(f"{db_path}: no measurement store (run observe ingest first)")
    return MeasurementStore(db_path)
