"""The report's grid: states per round from events, ground truth, folding, escaping, and the
report as headless Chromium draws it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from noisewall.observatory import GroundTruthBand, MeasurementStore, write_html_report
from noisewall.observatory.episodes import Event, EventKind
from noisewall.observatory.filtered import FilteredEvent
from noisewall.observatory.report_grid import (
    STATE_COLOURS,
    TRUTH_COLOUR,
    NetworkGrid,
    State,
    build_grids,
    grid_layout,
    render_grid,
)
from noisewall.observatory.store_types import SeriesKey
from noisewall.observatory.synthetic import SyntheticNetwork, synthetic_measurements
from tests.browser import chromium_path, screenshot

START, HOUR = 1_505_865_600.0, 3600.0
# The short names of the states, to write expected rows as strings: one letter per column.
LETTERS: dict[str, State] = {"o": "ok", "b": "blocked", "t": "throttled", "i": "intermittent",
                             "f": "filtered", "-": "no data"}


def at(round_number: float) -> float:
    return START + round_number * HOUR


def event(vantage: str, feature: str, kind: EventKind, onset: int, end: int | None,
          network: str = "N") -> Event:
    return Event(network, vantage, feature, kind, at(onset), None if end is None else at(end),
                 None, None, None, 0.9, 1)


def states(grid: NetworkGrid) -> list[str]:
    short = {state: letter for letter, state in LETTERS.items()}
    return ["".join(short[c.state] for c in row.cells) for row in grid.rows]


def marks(grid: NetworkGrid) -> list[str]:
    return ["".join("^" if c.truth else "." for c in row.cells) for row in grid.rows]


def test_cells_take_the_state_of_the_event_holding_their_round() -> None:
    direct_text, direct_photo = SeriesKey("N", "direct", "text"), SeriesKey("N", "direct", "photo")
    keyword = SeriesKey("N", "mainland", "keyword:k1")
    series = {direct_text: [at(r) for r in range(10)],
              direct_photo: [at(r) for r in range(10) if r != 6],  # round 6 lost
              keyword: [at(r) for r in range(2, 8)],
              SeriesKey("M", "direct", "text"): [at(0)]}
    events: list[Event | FilteredEvent] = [
        event("direct", "text", "throttled", 1, 4), event("direct", "text", "blocked", 4, 6),
        event("direct", "photo", "intermittent", 7, None),
        FilteredEvent("N", "mainland", "keyword:k1", at(3), at(5), 2)]
    # Mid-round onset: the first round it covers is the next one; the end is exclusive.
    truth = [GroundTruthBand("truth: blocked", at(3.5), at(6), feature="text"),
             GroundTruthBand("truth: filtered", at(3), None, vantage="mainland")]
    m_grid, n_grid = build_grids(series, events, truth)
    assert (m_grid.network, m_grid.columns, states(m_grid)) == ("M", 1, ["o"])
    assert [(r.vantage, r.feature) for r in n_grid.rows] == [
        ("direct", "photo"), ("direct", "text"), ("mainland", "keyword:k1")]
    assert (n_grid.interval, n_grid.rounds_per_cell, n_grid.columns) == (HOUR, 1, 10)
    assert states(n_grid) == ["oooooo-iii", "otttbboooo", "--offooo--"]
    assert marks(n_grid) == ["..........", "....^^....", "...^^^^^^^"]
    assert n_grid.rows[1].cells[4].truth == "truth: blocked"
    assert [c.rounds for c in n_grid.rows[0].cells] == [1] * 6 + [0] + [1] * 3


def test_a_long_span_folds_rounds_into_cells_showing_the_most_severe() -> None:
    key = SeriesKey("N", "direct", "text")
    events = [event("direct", "text", "intermittent", 6, 10),
              event("direct", "text", "blocked", 7, 8)]
    (grid,) = build_grids({key: [at(r) for r in range(400)]}, events,
                          [GroundTruthBand("t", at(399), None)], max_columns=160)
    assert (grid.rounds_per_cell, grid.columns) == (3, 134)
    assert states(grid)[0][:4] == "oobi" and set(states(grid)[0][4:]) == {"o"}
    assert [c.rounds for c in grid.rows[0].cells[-2:]] == [3, 1]
    assert marks(grid)[0] == "." * 133 + "^"


def test_an_unknown_event_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        rerouted = event("v", "f", "rerouted", 0, 1)  # type: ignore[arg-type]
        build_grids({SeriesKey("N", "v", "f"): [at(0)]}, [rerouted])


def test_the_svg_is_well_formed_with_hostile_names_escaped() -> None:
    hostile = '<script>alert("x")</script> & \'more\''
    key = SeriesKey(hostile, hostile, "text")
    (grid,) = build_grids({key: [at(r) for r in range(5)]},
                          [event(hostile, "text", "blocked", 2, 3, network=hostile)],
                          [GroundTruthBand(hostile, at(2), at(3))])
    svg = render_grid(grid)
    assert "<script" not in svg
    root = ET.fromstring(svg)  # malformed markup (an unescaped name) raises here
    fills = [(r.get("x"), r.get("width"), r.get("fill"))
             for r in root.iter("{http://www.w3.org/2000/svg}rect")]
    layout = grid_layout(grid)
    x0, w = layout.label_width, layout.cell_width
    assert fills == [(str(x0), str(2 * w), STATE_COLOURS["ok"]),
                     (str(x0 + 2 * w), str(w), STATE_COLOURS["blocked"]),
                     (str(x0 + 3 * w), str(2 * w), STATE_COLOURS["ok"]),
                     (str(x0 + 2 * w), str(w), TRUTH_COLOUR)]
    titles = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any(hostile in t for t in titles)


@pytest.fixture
def chromium() -> str:
    """Checked before the store is made: without a browser the test skips at once."""
    return chromium_path()


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_chromium_draws_the_grid_at_the_top_of_the_report(chromium: str, store: MeasurementStore,
                                                         tmp_path: Path) -> None:
    network = SyntheticNetwork("Net <b>&amp;", "AS64500", ("control", "direct"),
                               ("photo", "text"))
    measurements = [m for m in synthetic_measurements(network, rounds=12, start=START,
                                                      interval=HOUR, seed=1)
                    if (m["annotations"]["vantage"], m["annotations"]["round"]) != ("direct", "9")]
    store.ingest_measurements(measurements)
    events = [event("direct", "photo", "blocked", 3, 7, network.name),
              event("direct", "text", "throttled", 8, None, network.name),
              event("control", "text", "intermittent", 1, 3, network.name)]
    truth = [GroundTruthBand("truth: blocked", at(3) - 1800, at(7), vantage="direct",
                             feature="photo")]
    expected = ["oooooooooooo", "oiiooooooooo", "ooobbbboo-oo", "oooooooot-tt"]
    truth_marks = ["............", "............", "...^^^^.....", "............"]
    page = write_html_report(tmp_path / "report.html", store, events, ground_truth=truth)
    (grid,) = build_grids({k: store.rows(k).times for k in store.series()}, events, truth)
    assert states(grid) == expected and marks(grid) == truth_marks  # the model the page draws

    pixels = screenshot(chromium, page, tmp_path / "report.png", width=1100, height=600)

    layout = grid_layout(grid)
    # The grid is the page's first thing in the "ok" colour: its top left cell.
    ok = (pixels == _rgb(STATE_COLOURS["ok"])).all(axis=2)
    assert ok.any(), "no cell of the grid on the page's first screen"
    top = int(ok.nonzero()[0].min())
    left = int(ok[top].nonzero()[0].min())
    first = layout.cell(0, 0)
    origin_x, origin_y = left - first.x, top - first.y
    white = (255, 255, 255)
    for row, (letters, marked) in enumerate(zip(expected, truth_marks, strict=True)):
        for column, (letter, mark) in enumerate(zip(letters, marked, strict=True)):
            x, y = layout.cell(row, column).middle
            seen = tuple(int(v) for v in pixels[origin_y + y, origin_x + x])
            assert seen == _rgb(STATE_COLOURS[LETTERS[letter]]), (row, column, seen)
            x, y = layout.truth(row, column).middle
            seen = tuple(int(v) for v in pixels[origin_y + y, origin_x + x])
            assert seen == (_rgb(TRUTH_COLOUR) if mark == "^" else white), (row, column, seen)
