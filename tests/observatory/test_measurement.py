"""Measurement lines: the noisewall contract, OONI's whatsapp test, errors, and a fuzz."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.observatory.measurement import parse_line, parse_measurement, parse_ooni_time
from noisewall.observatory.rows import MeasurementError
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements
from tests.observatory.conftest import ooni_whatsapp_example


def _one(**events: Any) -> dict[str, Any]:
    network = SyntheticNetwork("Net", "AS64500", ("direct",), events=tuple(events.values()))
    return next(synthetic_measurements(network, rounds=1, start=1_505_865_600, interval=60,
                                       seed=3, stray_failure_rate=0))


def test_noisewall_measurement_rows() -> None:
    measurement = _one(text=Injected("blocked", "text", 0, failure="connection_reset"))
    parsed = parse_line(json.dumps(measurement))
    assert parsed.id == measurement["id"]
    assert parsed.time == 1_505_865_600
    assert (parsed.network, parsed.vantage, parsed.round) == ("Net", "direct", 0)
    rows = {r.feature: r for r in parsed.rows}
    assert set(rows) == {"text", "photo", "video", "voice", "location", "register", "tcp"}
    assert not rows["text"].ok and rows["text"].failure == "connection_reset"
    assert rows["photo"].ok and rows["photo"].throughput_kbps and rows["photo"].failure is None
    assert rows["tcp"].throughput_kbps is None


def test_ooni_whatsapp_example_parses() -> None:
    example = ooni_whatsapp_example()
    parsed = parse_measurement(example)
    assert parsed.vantage == "ooni"
    assert parsed.network == "Vodafone Italia S.p.A."
    assert parsed.time == parse_ooni_time("2022-12-07 09:52:48")
    assert {r.feature: r.ok for r in parsed.rows} == {
        "whatsapp_endpoints": True, "registration_server": True, "whatsapp_web": True}
    assert parsed.id.startswith("ooni-")  # collectors clear ids: the content digest stands in
    assert parse_measurement(example).id == parsed.id


def test_ooni_rows_read_the_verdict_keys_only() -> None:
    example = ooni_whatsapp_example()
    keys = example["test_keys"]
    keys["whatsapp_endpoints_status"] = "blocked"
    for connect in keys["tcp_connect"]:
        connect["status"] = {"success": False, "failure": "generic_timeout_error"}
    keys["registration_server_status"] = "blocked"
    keys["registration_server_failure"] = "connection_reset"
    keys["whatsapp_web_failure"] = False  # ooniprobe 2.x writes false for "no failure"
    rows = {r.feature: r for r in parse_measurement(example).rows}
    assert (rows["whatsapp_endpoints"].ok, rows["whatsapp_endpoints"].failure) == (False, None)
    assert rows["registration_server"].failure == "connection_reset"
    assert rows["whatsapp_web"].ok and rows["whatsapp_web"].failure is None


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("whatsapp_web_status", "maybe", "whatsapp_web_status"),
    ("registration_server_failure", 7, "registration_server_failure"),
])
def test_ooni_bad_verdicts_are_named(key: str, value: object, expected: str) -> None:
    example = ooni_whatsapp_example()
    example["test_keys"][key] = value
    with pytest.raises(MeasurementError, match=expected):
        parse_measurement(example)


def test_ooni_missing_verdict_gives_no_row() -> None:
    example = ooni_whatsapp_example()
    example["test_keys"]["whatsapp_web_status"] = None
    assert {r.feature for r in parse_measurement(example).rows} == {
        "whatsapp_endpoints", "registration_server"}


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda m: m["test_keys"]["features"]["text"].update(status="maybe"), "features.text.status"),
    (lambda m: m["test_keys"]["features"]["photo"].update(bytes="12"), "features.photo.bytes"),
    (lambda m: m["test_keys"]["features"]["photo"].update(throughput_kbps=-1.0),
     "throughput_kbps"),
    (lambda m: m["test_keys"]["features"].update(teleport={"status": "ok"}), "teleport"),
    (lambda m: m["test_keys"].update(features={}), "features"),
    (lambda m: m.update(measurement_start_time="2017-09-20T10:00:00Z"), "YYYY-MM-DD HH:MM:SS"),
    (lambda m: m.update(measurement_start_time="2017-13-40 10:00:00"), "time"),
    (lambda m: m.update(probe_asn=64500), "probe_asn"),
    (lambda m: m.pop("id"), "id"),
    (lambda m: m.update(test_name="web_connectivity"), "web_connectivity"),
    (lambda m: m.pop("test_keys"), "test_keys"),
])
def test_wrong_fields_are_named(mutate: Any, expected: str) -> None:
    measurement = _one()
    mutate(measurement)
    with pytest.raises(MeasurementError, match=expected.replace(".", r"\.")):
        parse_line(json.dumps(measurement))


@pytest.mark.parametrize("line", [b'{"id": "x", "test_keys": {', b"[1, 2]", b"\xff\xfe{}",
                                  b"null", b"NaN", b"[" * 100_000])
def test_garbage_lines_raise_measurement_error(line: bytes) -> None:
    with pytest.raises(MeasurementError):
        parse_line(line)


def test_nan_in_an_unvalidated_field_is_refused() -> None:
    line = json.dumps(_one()).replace('"test_runtime": 0.1', '"test_runtime": NaN')
    assert "NaN" in line
    parsed = parse_line(line)  # kept as received: the raw line is what is stored
    assert b"NaN" in parsed.raw
    with pytest.raises(MeasurementError, match="strict JSON"):
        parse_measurement(json.loads(line))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_parse_line_raises_only_measurement_error(data: st.DataObject) -> None:
    base = _one()
    choice = data.draw(st.sampled_from(["bytes", "field", "feature", "truncate"]))
    if choice == "bytes":
        line = data.draw(st.binary(max_size=200))
    else:
        if choice == "field":
            key = data.draw(st.sampled_from(sorted(base)))
            base[key] = data.draw(_json)
        elif choice == "feature":
            feature = base["test_keys"]["features"]["text"]
            key = data.draw(st.sampled_from(sorted(feature)))
            feature[key] = data.draw(_json)
        line = json.dumps(base).encode()
        if choice == "truncate":
            line = line[:data.draw(st.integers(0, len(line) - 1))]
    try:
        parsed = parse_line(line)
    except MeasurementError as exc:
        assert str(exc)
    else:
        assert parsed.rows and parsed.id
