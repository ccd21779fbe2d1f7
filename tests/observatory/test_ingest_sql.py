"""The engine's checks accept exactly what the Python parser accepts (the record's one schema)."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from noisewall.observatory.ingest_sql import features_pattern
from noisewall.observatory.measurement import parse_line
from noisewall.observatory.rows import MeasurementError, UnsupportedTest
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import SyntheticNetwork, synthetic_measurements
from noisewall.records.measurement import NoisewallTestKeys
from tests.observatory.conftest import ooni_whatsapp_example

Mutation = Callable[[dict[str, Any]], object]


def _feature(m: dict[str, Any]) -> dict[str, Any]:
    feature: dict[str, Any] = m["test_keys"]["features"]["photo"]
    return feature


NOISEWALL_MUTATIONS: list[Mutation] = [
    lambda m: None,
    lambda m: _feature(m).update(status="maybe"),
    lambda m: _feature(m).update(status=None),
    lambda m: _feature(m).pop("status"),
    lambda m: _feature(m).update(bytes="12"),
    lambda m: _feature(m).update(bytes=None),
    lambda m: _feature(m).pop("bytes"),
    lambda m: _feature(m).update(bytes=-1),
    lambda m: _feature(m).update(bytes=1.5),
    lambda m: _feature(m).update(throughput_kbps=True),
    lambda m: _feature(m).update(throughput_kbps=None),
    lambda m: _feature(m).update(throughput_kbps=-0.5),
    lambda m: _feature(m).update(throughput_kbps=12),
    lambda m: _feature(m).update(failure=3),
    lambda m: _feature(m).update(failure_phase="lunch"),
    lambda m: _feature(m).update(failure_phase="upload"),
    lambda m: _feature(m).update(runtime=None),
    lambda m: m["test_keys"]["features"].update(fax={"status": "ok"}),
    lambda m: m["test_keys"].update(features={}),
    lambda m: m["test_keys"].update(features=[]),
    lambda m: m["test_keys"]["features"].update(text="ok"),
    lambda m: m.update(id=None),
    lambda m: m.update(id=""),
    lambda m: m.update(id=7),
    lambda m: m.update(measurement_start_time="2017-13-01 00:00:00"),
    lambda m: m.update(measurement_start_time="2017-09-20T00:00:00Z"),
    lambda m: m.update(probe_asn=""),
    lambda m: m.pop("probe_cc"),
    lambda m: m.update(probe_network_name=None),
    lambda m: m.update(probe_network_name=5),
    lambda m: m.update(annotations=None),
    lambda m: m.update(annotations=[]),
    lambda m: m["annotations"].update(round=True),
    lambda m: m["annotations"].update(round="x7"),
    lambda m: m["annotations"].update(round="-5"),
    lambda m: m["annotations"].update(round=2**63 - 1),
    lambda m: m["annotations"].update(round=2**63),
    lambda m: m["annotations"].update(round=2**64),
    lambda m: m["annotations"].update(round=-(2**63) - 1),
    lambda m: m["annotations"].update(round="99999999999999999999"),
    lambda m: m["annotations"].update(vantage="\ud800"),
    lambda m: m["annotations"].update(vantage="\ud83d\ude00"),
    lambda m: m.update(test_keys=None),
    lambda m: m.update(test_name=None),
    lambda m: m.update(test_name="web_connectivity"),
]

OONI_MUTATIONS: list[Mutation] = [
    lambda m: None,
    lambda m: m["test_keys"].update(whatsapp_web_status="maybe"),
    lambda m: m["test_keys"].update(whatsapp_web_status=None),
    lambda m: m["test_keys"].update(whatsapp_web_failure=False),
    lambda m: m["test_keys"].update(whatsapp_web_failure=True),
    lambda m: m["test_keys"].update(whatsapp_web_failure=""),
    lambda m: m["test_keys"].update(registration_server_failure=7),
    lambda m: m["test_keys"].update(registration_server_status=True),
    lambda m: m.update(test_name="telegram"),
    lambda m: m.update(test_name="telegram", test_keys={"telegram_tcp_blocking": "yes"}),
    lambda m: m.update(test_name="facebook_messenger",
                       test_keys={"facebook_tcp_blocking": True, "facebook_dns_blocking": None}),
    lambda m: m.update(test_name="signal", test_keys={"signal_backend_status": "ok",
                                                      "signal_backend_failure": None}),
]


def _verdict(line: bytes) -> str:
    try:
        parse_line(line)
    except UnsupportedTest:
        return "skip"
    except MeasurementError:
        return "error"
    return "ok"


def mutated_lines(template: dict[str, Any], mutations: list[Mutation]) -> list[bytes]:
    """One JSON line per mutation of a copy of ``template`` (a fresh id if it has one)."""
    lines = []
    for mutate in mutations:
        measurement = copy.deepcopy(template)
        if measurement.get("id"):
            measurement["id"] = str(uuid.uuid4())
        mutate(measurement)
        lines.append(json.dumps(measurement).encode())
    return lines


def test_engine_and_parser_agree_line_by_line(store: MeasurementStore) -> None:
    network = SyntheticNetwork("Net", "AS64500", features=("text", "photo"))
    base = next(synthetic_measurements(network, rounds=1, start=1_505_865_600, interval=60,
                                       seed=1, stray_failure_rate=0))
    lines = mutated_lines(base, NOISEWALL_MUTATIONS)
    lines += mutated_lines(ooni_whatsapp_example(), OONI_MUTATIONS)
    lines += [b"[1, 2]", b"{oops", b'{"test_name": "whatsapp", "x": "\xe9"}', b"7"]
    expected = {n: _verdict(line) for n, line in enumerate(lines, 1)}
    assert sorted(set(expected.values())) == ["error", "ok", "skip"]
    report = store.ingest_lines(lines)
    errors = {e.line for e in report.errors}
    assert all(e.message for e in report.errors)
    assert not any(e.message.startswith("refused by the engine") for e in report.errors)
    assert errors == {n for n, v in expected.items() if v == "error"}
    assert sum(report.skipped.values()) == sum(v == "skip" for v in expected.values())
    assert report.stored == store.count() == sum(v == "ok" for v in expected.values())


SHORTCUT_MUTATIONS: list[Mutation] = [
    *NOISEWALL_MUTATIONS,
    lambda m: _feature(m).update(bytes=2**63),
    lambda m: _feature(m).update(bytes=2**70),
    lambda m: _feature(m).update(throughput_kbps=1e300),
    lambda m: _feature(m).update(throughput_kbps=-0.0),
    lambda m: _feature(m).update(failure='quote " and \\ backslash'),
    lambda m: _feature(m).update(failure="caf\u00e9"),
    lambda m: _feature(m).update(failure="\ud800"),
    lambda m: _feature(m).update(extra={"nested": [1, 2]}),
    lambda m: _feature(m).update(status="failed", failure=None),
    lambda m: m["test_keys"]["features"].update(photo={}),
]


def _features_valid(features: object) -> bool:
    try:
        NoisewallTestKeys.model_validate({"features": features}, strict=True)
    except ValidationError:
        return False
    return True


def test_features_shortcut_vouches_only_for_what_the_model_accepts() -> None:
    """The regex that spares the full check never matches features the model refuses."""
    pattern = features_pattern()
    assert pattern is not None
    network = SyntheticNetwork("Net", "AS64500", features=("text", "photo"))
    base = next(synthetic_measurements(network, rounds=1, start=1_505_865_600, interval=60,
                                       seed=1, stray_failure_rate=0))
    vouched = 0
    for mutate in SHORTCUT_MUTATIONS:
        measurement = copy.deepcopy(base)
        mutate(measurement)
        keys = measurement.get("test_keys")
        features = keys.get("features") if isinstance(keys, dict) else None
        # The engine matches the compact serialisation it makes of the parsed object.
        text = json.dumps(features, separators=(",", ":"), ensure_ascii=False)
        if re.fullmatch(pattern, text):
            vouched += 1
            assert _features_valid(features), text
    assert vouched >= 10  # the common shapes take the shortcut
