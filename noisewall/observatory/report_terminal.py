"""The terminal summary: events and counts as rich tables."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from noisewall.observatory.report_html import EVENT_COLUMNS, AnyEvent, SeriesCounts, event_rows


def summary_console() -> Console:
    """A console for the summary: the terminal's width, or wide enough when piped."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_summary(console: Console, events: Sequence[AnyEvent],
                  counts: Sequence[SeriesCounts]) -> None:
    """Print the events table and the per-series counts."""
    table = Table(title=f"{len(events)} events")
    for column in EVENT_COLUMNS:
        table.add_column(column)
    for row in event_rows(events):
        table.add_row(*(str(cell) for cell in row))
    console.print(table)
    totals = Table(title="measurements per series")
    for column in ("network", "vantage", "feature", "rounds", "ok", "failed", "success"):
        totals.add_column(column, justify="right" if column in {"rounds", "ok", "failed",
                                                                "success"} else "left")
    for c in counts:
        totals.add_row(c.key.network, c.key.vantage, c.key.feature, f"{c.rounds:,}",
                       f"{c.ok:,}", f"{c.failed:,}", f"{c.ok / c.rounds:.1%}")
    console.print(totals)
