"""Measurement files with one bad line among good ones: the bad line is dropped alone.

Hypothesis mangles one line of a measurement file (any field given any JSON
value, numbers past 64 bits, lone surrogate escapes, cut lines, raw bytes)
between two good ones and ingests the file into a real store. The ingest
must not raise; the good lines must be stored; the bad one, if refused, is a
line error that names its line number.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import SyntheticNetwork, synthetic_measurements

PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ODD_VALUES: st.SearchStrategy[Any] = st.sampled_from([
    2**63, 2**64 + 1, -(2**63) - 1, 10**40, 1e308, -0.0, "\ud800", "x\udfff", "", "\0", [], {},
    None, True])
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
    | ODD_VALUES,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


def measurements() -> Iterator[dict[str, Any]]:
    """Good measurements, each with an id of its own."""
    network = SyntheticNetwork("Net", "AS64500", ("direct",))
    for seed in itertools.count():
        yield from synthetic_measurements(network, rounds=50, start=1_505_865_600 + seed,
                                          interval=60, seed=seed, stray_failure_rate=0)


GOOD = measurements()
#: What the bad line is made from: always the same, so hypothesis can replay an example.
TEMPLATE = json.dumps(next(measurements()))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeasurementStore]:
    with MeasurementStore(tmp_path_factory.mktemp("obs") / "obs.db") as opened:
        yield opened


def mangled(measurement: dict[str, Any], data: st.DataObject) -> bytes:
    how = data.draw(st.sampled_from(["field", "nested", "cut", "bytes"]))
    if how == "bytes":
        return data.draw(st.binary(max_size=200)).replace(b"\n", b" ")
    if how == "field":
        measurement[data.draw(st.sampled_from(sorted(measurement)))] = data.draw(JSON)
    elif how == "nested":
        features = measurement["test_keys"]["features"]
        feature = features[data.draw(st.sampled_from(sorted(features)))]
        feature[data.draw(st.sampled_from(sorted(feature)))] = data.draw(JSON)
    line = json.dumps(measurement).encode()
    if how == "cut":
        line = line[:data.draw(st.integers(0, len(line) - 1))]
    return line


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(data=st.data())
def test_one_bad_line_is_dropped_alone(store: MeasurementStore, tmp_path: Path,
                                       data: st.DataObject) -> None:
    first, last = next(GOOD), next(GOOD)
    lines = [json.dumps(first).encode(), mangled(json.loads(TEMPLATE), data),
             json.dumps(last).encode()]
    path = tmp_path / f"measurements-{first['id']}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = store.ingest_files([path])
    assert report.file_errors == []
    assert [error.line for error in report.errors] in ([], [2])
    assert store.raw_measurement(first["id"]) is not None
    assert store.raw_measurement(last["id"]) is not None
    assert report.lines in (2, 3)  # a blank line is not a line


@pytest.mark.parametrize(("path", "value"), [
    (("annotations", "round"), str(2**63)),
    (("annotations", "round"), 2**64),
    (("probe_cc",), "\ud800"),
    (("report_id",), "x\udfff"),
])
def test_issue_19_lines_are_dropped_alone(store: MeasurementStore, tmp_path: Path,
                                          path: tuple[str, ...], value: object) -> None:
    """Issue 19: these aborted the whole file (nothing stored, exit 70)."""
    first, last = next(GOOD), next(GOOD)
    bad = json.loads(TEMPLATE)
    *parents, key = path
    target = bad
    for parent in parents:
        target = target[parent]
    target[key] = value
    lines = [json.dumps(first), json.dumps(bad), json.dumps(last)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    report = store.ingest_files([tmp_path / "m.jsonl"])
    assert report.file_errors == []
    assert [error.line for error in report.errors] == [2]
    assert store.raw_measurement(first["id"]) is not None
    assert store.raw_measurement(last["id"]) is not None
