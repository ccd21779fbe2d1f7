"""One self-contained HTML report: a grid per network, the events, the counts, the timelines.

At the top, a grid per network (:mod:`.report_grid`): one row per (vantage,
feature), one cell per round, coloured by state, ground truth marked. Each
timeline is inline SVG (no scripts, no external assets): the success
rate per time bucket, the median throughput on a log scale, the detected
events as coloured bands and, when the lab passes them, ground-truth bands
in a strip above. Callers may append their own tables (the lab's scores).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypeVar

from noisewall.observatory.episodes import Event
from noisewall.observatory.filtered import FilteredEvent, keyword_rounds
from noisewall.observatory.report_grid import (
    SEVERITY,
    STATE_COLOURS,
    TRUTH_COLOUR,
    State,
    build_grids,
    describe_columns,
    render_grid,
)
from noisewall.observatory.store import MeasurementStore, SeriesKey, SeriesRows
from noisewall.records.keyword import TEST_NAME as KEYWORD_TEST
from noisewall.records.measurement import ooni_time

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 960, 210, 60, 70, 26, 30
BUCKETS = 240


@dataclass(frozen=True, slots=True)
class GroundTruthBand:
    """A known censorship interval (from a scenario) to draw above the matching timelines.

    ``network`` / ``vantage`` / ``feature`` of None match every series.
    """

    label: str
    start: float
    end: float | None
    network: str | None = None
    vantage: str | None = None
    feature: str | None = None

    def matches(self, key: SeriesKey) -> bool:
        """True when this band belongs on that series' timeline."""
        return all(want is None or want == have for want, have in (
            (self.network, key.network), (self.vantage, key.vantage),
            (self.feature, key.feature)))


@dataclass(frozen=True, slots=True)
class ReportTable:
    """An extra table: a title, column names and rows of cells (shown as text)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]


@dataclass(frozen=True, slots=True)
class SeriesCounts:
    """Rounds, successes and failures of one series in the report window."""

    key: SeriesKey
    rounds: int
    ok: int

    @property
    def failed(self) -> int:
        """Failed rounds."""
        return self.rounds - self.ok


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


class _Axis:
    """Time to x pixels."""

    def __init__(self, start: float, stop: float) -> None:
        self.start = start
        self.span = max(stop - start, 1e-9)

    def x(self, when: float) -> float:
        fraction = min(max((when - self.start) / self.span, 0.0), 1.0)
        return LEFT + fraction * (WIDTH - LEFT - RIGHT)


def _buckets(rows: SeriesRows, start: float, stop: float
             ) -> list[tuple[float, float, float | None]]:
    """(bucket middle, success rate, median kbps) per non-empty bucket."""
    width = max(stop - start, 1e-9) / BUCKETS
    ok: list[list[bool]] = [[] for _ in range(BUCKETS)]
    rates: list[list[float]] = [[] for _ in range(BUCKETS)]
    for when, good, rate in zip(rows.times, rows.ok, rows.kbps, strict=True):
        i = min(int((when - start) / width), BUCKETS - 1)
        ok[i].append(good)
        if rate is not None:
            rates[i].append(rate)
    return [(start + (i + 0.5) * width, sum(ok[i]) / len(ok[i]),
             statistics.median(rates[i]) if rates[i] else None)
            for i in range(BUCKETS) if ok[i]]


def _svg(rows: SeriesRows, events: Sequence[Event], truth: Sequence[GroundTruthBand],
         start: float, stop: float) -> str:
    axis = _Axis(start, stop)
    plot_top, plot_bottom = TOP, HEIGHT - BOTTOM
    plot_height = plot_bottom - plot_top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
             f'<rect x="{LEFT}" y="{plot_top}" width="{WIDTH - LEFT - RIGHT}" '
             f'height="{plot_height}" fill="#fafafa" stroke="#ccc"/>']
    for band in truth:
        x0, x1 = axis.x(band.start), axis.x(stop if band.end is None else band.end)
        # The label sits in a nested <svg>, which clips it to its band: adjacent
        # short bands would otherwise print their labels over each other.
        parts.append(f'<svg x="{x0:.1f}" y="4" width="{max(x1 - x0, 1):.1f}" height="14">'
                     f'<rect width="100%" height="100%" fill="#2ca02c" opacity="0.6">'
                     f'<title>truth: {_esc(band.label)}</title></rect>'
                     f'<text x="2" y="11" font-size="10">{_esc(band.label)}</text></svg>')
    for event in events:
        x0, x1 = axis.x(event.onset), axis.x(stop if event.end is None else event.end)
        detail = event.failure or (f"{event.rate_kbps} kbit/s" if event.rate_kbps else "")
        parts.append(f'<rect x="{x0:.1f}" y="{plot_top}" width="{max(x1 - x0, 1):.1f}" '
                     f'height="{plot_height}" fill="{STATE_COLOURS[event.kind]}" opacity="0.22">'
                     f'<title>{_esc(event.kind)} {_esc(detail)} from '
                     f'{ooni_time(event.onset)}</title></rect>')
    buckets = _buckets(rows, start, stop)
    success = " ".join(f"{axis.x(t):.1f},{plot_bottom - s * plot_height:.1f}"
                       for t, s, _ in buckets)
    parts.append(f'<polyline points="{success}" fill="none" stroke="#1f77b4" '
                 f'stroke-width="1.5"/>')
    rates = [r for _, _, r in buckets if r is not None and r > 0]
    if rates:
        low, high = math.log10(min(rates)), math.log10(max(rates))
        high = max(high, low + 1)

        def y_rate(rate: float) -> float:
            return plot_bottom - (math.log10(rate) - low) / (high - low) * plot_height

        line = " ".join(f"{axis.x(t):.1f},{y_rate(r):.1f}" for t, _, r in buckets
                        if r is not None and r > 0)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#555" '
                     f'stroke-dasharray="3 2" stroke-width="1"/>')
        for value in (10 ** low, 10 ** high):
            parts.append(f'<text x="{WIDTH - RIGHT + 4}" y="{y_rate(value) + 4:.1f}" '
                         f'font-size="10">{value:,.0f} kbit/s</text>')
    parts.append(f'<text x="{LEFT - 4}" y="{plot_top + 8}" font-size="10" '
                 f'text-anchor="end">100%</text><text x="{LEFT - 4}" y="{plot_bottom}" '
                 f'font-size="10" text-anchor="end">0%</text>')
    for fraction in (0.0, 0.5, 1.0):
        when = start + fraction * (stop - start)
        anchor = ("start", "middle", "end")[int(fraction * 2)]
        parts.append(f'<text x="{axis.x(when):.1f}" y="{HEIGHT - 10}" font-size="10" '
                     f'text-anchor="{anchor}">{ooni_time(when)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<h2>{_esc(title)}</h2><table><tr>{head}</tr>{body}</table>"


#: What the reports show: the detector's network events and the keyword probe's filtered ones.
AnyEvent: TypeAlias = Event | FilteredEvent
_E = TypeVar("_E", bound=AnyEvent)


def event_rows(events: Sequence[AnyEvent]) -> list[list[object]]:
    """The events as table rows (shared by the HTML and terminal reports).

    A ``filtered`` event has no failure, rate or confidence: the server's
    choice is read directly (the control arrived, the candidate did not).
    """
    return [[e.network, e.vantage, e.feature, e.kind, ooni_time(e.onset),
             "ongoing" if e.end is None else ooni_time(e.end), e.rounds,
             *(("server dropped it silently", "", "", "")
               if isinstance(e, FilteredEvent) else
               (e.failure or "", "" if e.rate_kbps is None else f"{e.rate_kbps:,.1f}",
                "" if e.success_fraction is None else f"{e.success_fraction:.0%}",
                f"{e.confidence:.2f}"))] for e in events]


EVENT_COLUMNS = ("network", "vantage", "feature", "kind", "onset (UTC)", "end (UTC)", "rounds",
                 "failure", "rate kbit/s", "success", "confidence")


def in_window(events: Sequence[_E], since: float | None, until: float | None) -> list[_E]:
    """Events that overlap ``[since, until)``."""
    return [e for e in events
            if (until is None or e.onset < until)
            and (since is None or e.end is None or e.end > since)]


def series_counts(store: MeasurementStore, since: float | None = None,
                  until: float | None = None) -> list[tuple[SeriesCounts, SeriesRows]]:
    """Each series' rows in the window with its counts (series without rows left out)."""
    result = []
    for key in store.series():
        rows = store.rows(key, since=since, until=until)
        if rows.times:
            result.append((SeriesCounts(key, len(rows.times), sum(rows.ok)), rows))
    return result


_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 24px}td,th{border:1px solid #ddd;padding:3px 8px;
font-size:13px;text-align:left}th{background:#f0f0f0}h3{margin:18px 0 4px;font-size:15px}
.legend>span{display:inline-block;margin-right:14px;font-size:13px}
.caption{margin:0 0 4px;font-size:12px;color:#555}svg.grid{display:block}"""

#: Timeline bands: the detector's event kinds (filtered events have no timeline).
_TIMELINE_KINDS: tuple[State, ...] = ("blocked", "throttled", "intermittent")


def _swatch(colour: str, text: str) -> str:
    return f'<span><span style="color:{colour}">&#9632;</span> {text}</span>'


def _grid_section(series: Sequence[tuple[SeriesCounts, SeriesRows]],
                  keyword: dict[tuple[str, str, str], list[tuple[float, bool | None]]],
                  events: Sequence[AnyEvent], ground_truth: Sequence[GroundTruthBand]) -> str:
    """The grids at a glance, one per network, with their legend and how to read them."""
    times = {c.key: rows.times for c, rows in series}
    times.update((SeriesKey(*key), [t for t, _ in rounds]) for key, rounds in keyword.items())
    grids = build_grids(times, events, ground_truth)
    parts = ["<h2>At a glance</h2>"]
    for grid in grids:
        parts.append(f"<h3>{_esc(grid.network)}</h3><p class=\"caption\">"
                     f"{len(grid.rows)} series, {_esc(describe_columns(grid))}</p>"
                     f"{render_grid(grid)}")
    states = "".join(_swatch(STATE_COLOURS[state], state) for state in SEVERITY)
    truth = (f'<span><span style="color:{TRUTH_COLOUR}">&#9604;</span> ground truth (under '
             f'the cells it covers)</span>' if ground_truth else "")
    scoring = (" A coloured cell over a marker is a detection, a green one over a marker a "
               "miss, a coloured one with no marker a false alarm." if ground_truth else "")
    parts.append(f'<p class="legend">{states}{truth}</p><p class="caption">A row per vantage '
                 f'and feature, a column per round, left to right in time; a cell is the '
                 f'analysis&#8217; state of that series in that round (an event&#8217;s kind, '
                 f'else ok; no data: no measurement).{scoring} Hover a cell for its dates and '
                 f'rounds.</p>')
    return "".join(parts)


def write_html_report(path: str | Path, store: MeasurementStore, events: Sequence[AnyEvent], *,
                      since: float | None = None, until: float | None = None,
                      ground_truth: Sequence[GroundTruthBand] = (),
                      extra_tables: Sequence[ReportTable] = ()) -> Path:
    """Write the report to ``path`` (atomically: a temporary file renamed into place).

    The grids show ``events`` over every stored series, the keyword probe's
    candidates included (their rounds are read from its measurements).
    """
    series = series_counts(store, since, until)
    keyword = keyword_rounds(json.loads(raw) for raw in store.raw_measurements_of(
        KEYWORD_TEST, since=since, until=until))
    shown = in_window(events, since, until)
    times = [t for _, rows in series for t in (rows.times[0], rows.times[-1])]
    start = since if since is not None else min(times, default=0.0)
    stop = until if until is not None else max(times, default=1.0)
    legend = "".join(_swatch(STATE_COLOURS[kind], kind) for kind in _TIMELINE_KINDS)
    sections = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>noisewall "
                f"observatory report</title><style>{_STYLE}</style></head><body>"
                f"<h1>noisewall observatory</h1><p>{ooni_time(start)} to "
                f"{ooni_time(stop)} UTC: {sum(c.rounds for c, _ in series):,} results "
                f"in {len(series)} series, {len(shown)} events.</p>",
                _grid_section(series, keyword, shown, ground_truth),
                _table("Events", EVENT_COLUMNS, event_rows(shown)),
                _table("Counts", ("network", "vantage", "feature", "rounds", "ok", "failed",
                                  "success"),
                       [[c.key.network, c.key.vantage, c.key.feature, c.rounds, c.ok, c.failed,
                         f"{c.ok / c.rounds:.1%}"] for c, _ in series])]
    sections.extend(_table(t.title, t.columns, t.rows) for t in extra_tables)
    sections.append(f'<h2>Timelines</h2><p class="legend"><span style="color:#1f77b4">&#9473; '
                    f'success rate</span><span style="color:#555">&#9476; median throughput '
                    f'(log scale)</span>{legend}<span style="color:#2ca02c">&#9632; ground '
                    f'truth</span></p>')
    for counts, rows in series:
        key = counts.key
        mine = [e for e in shown if isinstance(e, Event) and (e.network, e.vantage, e.feature)
                == (key.network, key.vantage, key.feature)]
        truth = [b for b in ground_truth if b.matches(key)]
        sections.append(f"<h3>{_esc(key.network)} &middot; {_esc(key.vantage)} &middot; "
                        f"{_esc(key.feature)}</h3>{_svg(rows, mine, truth, start, stop)}")
    sections.append("</body></html>\n")
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text("".join(sections), encoding="utf-8")
    partial.replace(target)
    return target
