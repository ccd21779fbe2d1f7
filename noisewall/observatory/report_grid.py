"""The report's grid at a glance: per network, one row per (vantage, feature), one cell per round.

Like OONI Explorer's measurement-aggregation chart, each cell is coloured by
the analysis' state of that series in that round: inside a detected event
its kind (``blocked``, ``throttled``, ``intermittent``, ``filtered``),
otherwise ``ok``; a round the series has no measurement for is ``no data``.
Ground truth (the lab's) is a dark marker under the cells it covers, so a
detection is a coloured cell above a marker, a miss a green cell above one,
a false alarm a coloured cell with none.

Columns are the network's probe rounds (its series' typical spacing), so the
rows line up; a long span is folded into at most :data:`MAX_COLUMNS` columns
of several rounds each, a cell then showing its most severe round.

Sans-IO: :func:`build_grids` turns round times, events and ground truth into
:class:`NetworkGrid` models; :func:`render_grid` draws one as inline SVG (no
scripts, no external assets), laid out by :func:`grid_layout`.
"""

from __future__ import annotations

import html
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from noisewall.observatory.episodes import probe_interval
from noisewall.observatory.store_types import SeriesKey
from noisewall.records.measurement import ooni_time

State = Literal["ok", "blocked", "throttled", "intermittent", "filtered", "no data"]

#: The states from most to least severe: a cell of several rounds shows its most severe one.
SEVERITY: tuple[State, ...] = ("blocked", "filtered", "throttled", "intermittent", "ok",
                               "no data")

#: Fill colour per state (the timelines use the same ones for their event bands).
STATE_COLOURS: Mapping[State, str] = {
    "ok": "#74c476", "blocked": "#d62728", "throttled": "#ff7f0e", "intermittent": "#9467bd",
    "filtered": "#8c564b", "no data": "#e3e3e3"}

#: The ground-truth marker's colour.
TRUTH_COLOUR = "#222222"

#: At most this many columns per grid; longer spans put several rounds in a cell.
MAX_COLUMNS = 160

# Geometry (pixels). Cells are whole pixels wide and drawn with crisp edges, so
# each cell's middle is exactly its colour on screen (the browser test reads it).
CELLS_WIDTH = 840
MAX_CELL_WIDTH = 16
CELL_HEIGHT = 14
TRUTH_HEIGHT = 4
ROW_GAP = 4
AXIS_HEIGHT = 16
LABEL_CHARS = 40
LABEL_CHAR_WIDTH = 6.5
FONT = 'font-family="system-ui,sans-serif" font-size="11"'


class EventSpan(Protocol):
    """What the grid reads of an event (the detector's and the keyword probe's alike)."""

    @property
    def network(self) -> str: ...
    @property
    def vantage(self) -> str: ...
    @property
    def feature(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def onset(self) -> float: ...
    @property
    def end(self) -> float | None: ...


class TruthSpan(Protocol):
    """What the grid reads of a ground-truth interval."""

    @property
    def label(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float | None: ...

    def matches(self, key: SeriesKey) -> bool:
        """True when the interval belongs to that series."""


@dataclass(frozen=True, slots=True)
class GridCell:
    """One series in one column: its state, its rounds there, the ground truth covering it."""

    state: State
    rounds: int
    truth: str | None


@dataclass(frozen=True, slots=True)
class GridRow:
    """One (vantage, feature) series: a cell per column."""

    vantage: str
    feature: str
    cells: tuple[GridCell, ...]


@dataclass(frozen=True, slots=True)
class NetworkGrid:
    """One network's grid of ``rounds`` rounds, round ``j`` at ``first + j * interval`` and in
    column ``j // rounds_per_cell``; ``truth_shown`` when ground truth was given."""

    network: str
    first: float
    interval: float
    rounds: int
    rounds_per_cell: int
    columns: int
    rows: tuple[GridRow, ...]
    truth_shown: bool

    def column_time(self, column: int) -> float:
        """The time of the column's first round."""
        return self.first + column * self.rounds_per_cell * self.interval


def _network_interval(times: Iterable[Sequence[float]]) -> float:
    """The shortest typical round spacing of the network's series (1 s if none has two)."""
    steps = [probe_interval(t) for t in times if len(set(t)) > 1]
    return min(steps, default=1.0)


def _round_states(times: Sequence[float], events: Sequence[EventSpan]) -> list[int]:
    """Per round (``times`` sorted), the index in :data:`SEVERITY` of its state."""
    ok = SEVERITY.index("ok")
    states = [ok] * len(times)
    for event in events:
        rank = SEVERITY.index(event.kind)  # ValueError for an unknown kind
        lo = bisect_left(times, event.onset)
        hi = len(times) if event.end is None else bisect_left(times, event.end)
        for i in range(lo, hi):
            states[i] = min(states[i], rank)
    return states


def _truth_columns(band: TruthSpan, grid: NetworkGrid) -> range:
    """The columns holding a round ``band`` covers (``start <= t < end``)."""

    def first_round_from(when: float) -> int:
        return math.ceil((when - grid.first) / grid.interval - 1e-9)

    first = max(first_round_from(band.start), 0)
    last = grid.rounds - 1 if band.end is None else min(first_round_from(band.end) - 1,
                                                          grid.rounds - 1)
    if first > last:
        return range(0)
    return range(first // grid.rounds_per_cell, last // grid.rounds_per_cell + 1)


def _row(key: SeriesKey, times: Sequence[float], events: Sequence[EventSpan],
         truth: Sequence[TruthSpan], grid: NetworkGrid) -> GridRow:
    ranks = [len(SEVERITY) - 1] * grid.columns
    counts = [0] * grid.columns
    for when, rank in zip(times, _round_states(times, events), strict=True):
        column = round((when - grid.first) / grid.interval) // grid.rounds_per_cell
        counts[column] += 1
        ranks[column] = min(ranks[column], rank)
    labels: list[list[str]] = [[] for _ in range(grid.columns)]
    for band in truth:
        if band.matches(key):
            for column in _truth_columns(band, grid):
                labels[column].append(band.label)
    return GridRow(key.vantage, key.feature, tuple(
        GridCell(SEVERITY[rank], count, "; ".join(dict.fromkeys(names)) or None)
        for rank, count, names in zip(ranks, counts, labels, strict=True)))


def build_grids(series: Mapping[SeriesKey, Sequence[float]], events: Iterable[EventSpan],
                truth: Sequence[TruthSpan] = (), *,
                max_columns: int = MAX_COLUMNS) -> list[NetworkGrid]:
    """One grid per network, networks and rows in sorted order.

    ``series``: each series' round times (sorted; series without rounds are
    left out). ``events``: every event to show; a round is in an event when
    ``onset <= t < end``. ``truth``: ground-truth intervals, each marked on
    the series it :meth:`~TruthSpan.matches`.
    """
    by_series: dict[SeriesKey, list[EventSpan]] = {}
    for event in events:
        by_series.setdefault(SeriesKey(event.network, event.vantage, event.feature),
                             []).append(event)
    networks: dict[str, list[SeriesKey]] = {}
    for key in sorted(series, key=lambda k: (k.network, k.vantage, k.feature)):
        if series[key]:
            networks.setdefault(key.network, []).append(key)
    grids = []
    for network, keys in networks.items():
        first = min(series[k][0] for k in keys)
        last = max(series[k][-1] for k in keys)
        interval = _network_interval(series[k] for k in keys)
        rounds = round((last - first) / interval) + 1
        per_cell = math.ceil(rounds / max_columns)
        grid = NetworkGrid(network, first, interval, rounds, per_cell,
                           math.ceil(rounds / per_cell), (), bool(truth))
        grids.append(replace(grid, rows=tuple(
            _row(k, series[k], by_series.get(k, []), truth, grid) for k in keys)))
    return grids


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle in the grid's SVG, in pixels from its top left corner."""

    x: int
    y: int
    width: int
    height: int

    @property
    def middle(self) -> tuple[int, int]:
        """The pixel at the middle of the box."""
        return self.x + self.width // 2, self.y + self.height // 2


@dataclass(frozen=True, slots=True)
class GridLayout:
    """Where a grid's parts go: the row labels, then the cells, a marker strip under each row."""

    label_width: int
    cell_width: int
    row_pitch: int
    width: int
    height: int

    def cell(self, row: int, column: int) -> Box:
        """The cell of ``row`` in ``column``."""
        return Box(self.label_width + column * self.cell_width,
                   AXIS_HEIGHT + row * self.row_pitch, self.cell_width, CELL_HEIGHT)

    def truth(self, row: int, column: int) -> Box:
        """The ground-truth marker under that cell."""
        cell = self.cell(row, column)
        return Box(cell.x, cell.y + CELL_HEIGHT + 1, self.cell_width, TRUTH_HEIGHT)


def _label(row: GridRow) -> str:
    return f"{row.vantage} · {row.feature}"


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def grid_layout(grid: NetworkGrid) -> GridLayout:
    """The layout :func:`render_grid` draws ``grid`` with."""
    longest = max((len(_short(_label(r))) for r in grid.rows), default=0)
    label_width = math.ceil(longest * LABEL_CHAR_WIDTH) + 10
    cell_width = max(1, min(MAX_CELL_WIDTH, CELLS_WIDTH // max(grid.columns, 1)))
    row_pitch = CELL_HEIGHT + ROW_GAP + ((TRUTH_HEIGHT + 1) if grid.truth_shown else 0)
    return GridLayout(label_width, cell_width, row_pitch,
                      label_width + cell_width * grid.columns + 4,
                      AXIS_HEIGHT + row_pitch * len(grid.rows))


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _runs(values: Sequence[object]) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of equal consecutive values."""
    runs: list[tuple[int, int]] = []
    for i, value in enumerate(values):
        if runs and values[runs[-1][0]] == value:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _span_text(grid: NetworkGrid, start: int, stop: int) -> str:
    last = grid.column_time(stop) - grid.interval
    return (ooni_time(grid.column_time(start)) if last <= grid.column_time(start)
            else f"{ooni_time(grid.column_time(start))} to {ooni_time(last)}")


def render_grid(grid: NetworkGrid) -> str:
    """The grid as one inline SVG element; every string from the data is escaped.

    Equal neighbouring cells are drawn as one rectangle (with a tooltip for
    the run); thin white lines between columns keep the rounds countable.
    """
    layout = grid_layout(grid)
    parts = [f'<svg class="grid" xmlns="http://www.w3.org/2000/svg" width="{layout.width}" '
             f'height="{layout.height}" viewBox="0 0 {layout.width} {layout.height}" '
             f'role="img" aria-label="{_esc(grid.network)}: state per round" '
             f'shape-rendering="crispEdges" {FONT}>']
    cells_width = layout.cell_width * grid.columns
    # A date is about 90 px wide: fewer of them on a narrow grid, so they do not overlap.
    ticks = [(0, "start")]
    if cells_width >= 200:
        ticks.append((grid.columns, "end"))
    if cells_width >= 300:
        ticks.append((grid.columns // 2, "middle"))
    for column, anchor in ticks:
        x = layout.label_width + column * layout.cell_width
        when = grid.column_time(min(column, grid.columns - 1))
        parts.append(f'<text x="{x}" y="{AXIS_HEIGHT - 5}" font-size="10" '
                     f'text-anchor="{anchor}">{ooni_time(when)[:16]}</text>')
    for index, row in enumerate(grid.rows):
        label = _label(row)
        top = layout.cell(index, 0).y
        parts.append(f'<text x="{layout.label_width - 6}" y="{top + CELL_HEIGHT - 3}" '
                     f'text-anchor="end"><title>{_esc(label)}</title>'
                     f'{_esc(_short(label))}</text>')
        for start, stop in _runs([c.state for c in row.cells]):
            state = row.cells[start].state
            rounds = sum(c.rounds for c in row.cells[start:stop])
            box = layout.cell(index, start)
            parts.append(f'<rect x="{box.x}" y="{box.y}" width="{box.width * (stop - start)}" '
                         f'height="{box.height}" fill="{STATE_COLOURS[state]}"><title>'
                         f'{_esc(label)}: {state}, {_span_text(grid, start, stop)} '
                         f'({rounds} round{"" if rounds == 1 else "s"})</title></rect>')
        for start, stop in _runs([c.truth for c in row.cells]):
            truth = row.cells[start].truth
            if truth is None:
                continue
            box = layout.truth(index, start)
            parts.append(f'<rect x="{box.x}" y="{box.y}" width="{box.width * (stop - start)}" '
                         f'height="{box.height}" fill="{TRUTH_COLOUR}"><title>ground truth: '
                         f'{_esc(truth)}, {_span_text(grid, start, stop)}</title></rect>')
    if layout.cell_width >= 4 and grid.rows:
        bottom = layout.height - ROW_GAP
        lines = "".join(f"M{layout.label_width + c * layout.cell_width + 0.5} {AXIS_HEIGHT}"
                        f"V{bottom}" for c in range(1, grid.columns))
        parts.append(f'<path d="{lines}" stroke="#fff" stroke-width="1"/>')
    parts.append("</svg>")
    return "".join(parts)


def describe_columns(grid: NetworkGrid) -> str:
    """What one column is, for the caption: one round (and its spacing) or several."""
    spacing = _duration(grid.interval)
    if grid.rounds_per_cell == 1:
        return f"one column per round (every {spacing})"
    return (f"one column per {grid.rounds_per_cell} rounds of {spacing} "
            "(a cell shows its most severe round)")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"
