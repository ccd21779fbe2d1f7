"""YAML spec loading: line tracking, typed errors naming file:line:field, times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from noisewall.errors import InputError
from noisewall.yamlspec import (
    MAX_DEPTH,
    LineTracker,
    SpecError,
    SpecPath,
    When,
    compose_spec,
    field_name,
    line_of,
    parse_when,
    read_spec_text,
    validation_error,
)


class DemoError(SpecError):
    """The error type a loader under test chooses."""


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(gt=0)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: When
    items: list[_Item]


def load(text: str) -> _Doc:
    """A complete loader built the way policy and scenario loaders are."""
    node = compose_spec(text, "demo.yaml", DemoError)
    if node is None:
        raise DemoError("demo.yaml", 1, None, "empty")
    tracker = LineTracker("demo.yaml", DemoError)
    data = tracker.convert(node)

    def describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
        path = tuple(error["loc"])
        return path, path, str(error["msg"])

    try:
        return _Doc.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, tracker.lines, "demo.yaml", DemoError, describe) from None


def test_spec_error_names_file_line_and_field() -> None:
    error = DemoError("p.yaml", 12, "rules[1].action", "bad")
    assert isinstance(error, InputError)
    assert str(error) == "p.yaml:12: rules[1].action: bad"
    assert str(DemoError("p.yaml", None, None, "cannot read")) == "p.yaml: cannot read"
    assert (error.file, error.line, error.field, error.message) == (
        "p.yaml", 12, "rules[1].action", "bad")


def test_field_name_and_line_of_nearest_enclosing_field() -> None:
    assert field_name(()) is None
    assert field_name(("rules", 1, "action", "kind")) == "rules[1].action.kind"
    assert field_name((0, "a")) == "[0].a"
    lines: dict[SpecPath, int] = {(): 1, ("rules",): 2, ("rules", 0): 3}
    assert line_of(lines, ("rules", 0, "match", "sni")) == 3
    assert line_of(lines, ("other",)) == 1


def test_tracker_records_the_line_of_every_field() -> None:
    text = "# comment\nat: 2020-01-01\nitems:\n  - size: 1\n  -\n    size: 2\n"
    node = compose_spec(text, "demo.yaml", DemoError)
    assert node is not None
    tracker = LineTracker("demo.yaml", DemoError)
    assert tracker.convert(node) == {"at": date(2020, 1, 1), "items": [{"size": 1}, {"size": 2}]}
    assert tracker.lines == {
        (): 2, ("at",): 2, ("items",): 3, ("items", 0): 4, ("items", 0, "size"): 4,
        ("items", 1): 6, ("items", 1, "size"): 6,
    }


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    ("a: 1\na: 2\n", 2, "a", "duplicate key"),
    ("a:\n  - !!python/tuple [1]\n", 2, "a[0]", "unsupported YAML tag"),
    ("a: !!python/object:os.system x\n", 1, "a", "could not determine a constructor"),
    ("a: &x [*x]\n", 1, "a[0]", "recursive alias"),
    ("a:\n  1: x\n", 2, "a", "keys must be strings"),
    ("a: 2020-13-45\n", 1, "a", "invalid value"),
    ("a: " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2) + "\n", 1, None, "nested too deeply"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
     + "".join(f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
               for p, c in zip("abcdef", "bcdefg", strict=True)),
     None, None, "demo too large"),
])
def test_tracker_errors(text: str, line: int | None, field: str | None, message: str) -> None:
    node = compose_spec(text, "demo.yaml", DemoError)
    assert node is not None
    with pytest.raises(DemoError) as caught:
        LineTracker("demo.yaml", DemoError, "demo").convert(node)
    assert message in caught.value.message
    if line is not None:
        assert caught.value.line == line
    if field is not None:
        assert caught.value.field == field


@pytest.mark.parametrize(("text", "line"), [
    ("a: [1, 2\n", 2),
    ("a: 1\n  b: 2\n", 2),
    ("a: \x07\n", 1),
    ("--- 1\n--- 2\n", 2),
])
def test_compose_errors_are_typed_with_a_line(text: str, line: int) -> None:
    with pytest.raises(DemoError) as caught:
        compose_spec(text, "demo.yaml", DemoError)
    assert caught.value.line == line and caught.value.message.startswith("invalid YAML")
    assert compose_spec("", "demo.yaml", DemoError) is None


def test_validation_error_reports_the_earliest_line() -> None:
    with pytest.raises(DemoError) as caught:
        load("items:\n  - size: 1\n  - size: 0\n    colour: red\nat: soon\n")
    assert caught.value.line == 3 and caught.value.field == "items[1].size"
    assert "greater than 0" in caught.value.message


def test_a_valid_document_loads() -> None:
    doc = load("at: 2020-01-02T03:04:05+08:00\nitems: [{size: 3}]\n")
    assert doc.at == datetime(2020, 1, 1, 19, 4, 5, tzinfo=UTC)
    assert doc.items[0].size == 3


def test_parse_when() -> None:
    assert parse_when("2017-09-20") == datetime(2017, 9, 20, tzinfo=UTC)
    assert parse_when(date(2017, 9, 20)) == datetime(2017, 9, 20, tzinfo=UTC)
    assert parse_when(datetime(2017, 9, 20, 8)) == datetime(2017, 9, 20, 8, tzinfo=UTC)
    eight = timezone(timedelta(hours=8))
    assert parse_when(" 2017-10-18T00:00:00+08:00 ") == datetime(2017, 10, 18, tzinfo=eight)
    for bad in ("yesterday", 5, None):
        with pytest.raises(ValueError, match="not an ISO 8601 date or datetime"):
            parse_when(bad)


def test_read_spec_text(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\n", encoding="utf-8")
    assert read_spec_text(good, DemoError) == "a: 1\n"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: \xff\n")
    with pytest.raises(DemoError, match=r"bad\.yaml: not UTF-8 text"):
        read_spec_text(bad, DemoError)
    with pytest.raises(DemoError, match=r"missing\.yaml: cannot read"):
        read_spec_text(tmp_path / "missing.yaml", DemoError)


_yaml_alphabet = st.sampled_from([*"ab:-[]{},&*!|>'\"#%@`\n\t ?12.", "!!python/name:os", "<<"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_yaml_alphabet, max_size=60).map("".join)))
def test_random_text_gives_a_document_or_the_typed_error(text: str) -> None:
    try:
        load(text)
    except DemoError as exc:
        assert str(exc).startswith("demo.yaml")


@settings(max_examples=100, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=20,
))
def test_any_yaml_data_converts_back_to_itself(data: Any) -> None:
    node = compose_spec(yaml.safe_dump(data), "demo.yaml", DemoError)
    assert node is not None
    assert LineTracker("demo.yaml", DemoError).convert(node) == data
