"""Scenario files: the shipped ones load; broken ones fail with file, line and field."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisewall.censor.flowrecord import FlowRecord
from noisewall.errors import InputError
from noisewall.lab.addressplan import LOOPBACK_PLAN
from noisewall.lab.groundtruth import ground_truth
from noisewall.lab.scenario import (
    ScenarioError,
    load_scenario,
    parse_scenario,
    resolve_scenario,
    shipped_scenarios,
)
from noisewall.records.endpoint import Endpoint

ROOT = Path(__file__).resolve().parents[2]
CHINA = shipped_scenarios()["china-2017"]


def test_shipped_scenarios_are_the_top_level_files() -> None:
    shipped = shipped_scenarios()
    assert set(shipped) == {"china-2017", "russia-2021", "gfw-fet-2021", "wechat-2017"}
    for name, text in shipped.items():
        assert (ROOT / "scenarios" / f"{name}.yaml").read_text(encoding="utf-8") == text


@pytest.mark.parametrize("name", ["china-2017", "russia-2021", "gfw-fet-2021", "wechat-2017"])
def test_shipped_scenarios_load_with_ground_truth(name: str) -> None:
    scenario = resolve_scenario(name)
    assert scenario.name == name
    truth = ground_truth(scenario)
    assert truth, "every shipped scenario has something to detect"
    for event in truth:
        assert scenario.start < event.onset < scenario.end
        assert event.end is None or event.onset < event.end <= scenario.end
        assert event.source in ("record", "illustrative")
    for entry in scenario.timeline:
        assert entry.note, f"{name}: {entry.name} says where its dates come from"


def test_china_ground_truth_follows_the_record() -> None:
    truth = ground_truth(resolve_scenario("china-2017"))
    by_rule = {(e.rule, e.feature): e for e in truth}
    assert {f for (rule, f) in by_rule if rule == "media-blocked"} == {"photo", "video", "voice"}
    assert by_rule[("media-blocked", "photo")].kind == "blocked"
    assert by_rule[("text-flapping", "text")].kind == "intermittent"
    throttled = by_rule[("noisesocket-throttled", "text")]
    assert throttled.kind == "throttled" and throttled.source == "record"
    assert throttled.onset == 1505836800.0  # 20 Sep 2017 00:00 +08:00
    assert by_rule[("noisesocket-blocked", "text")].end is None
    assert all(e.vantage == "direct" for e in truth), "control and tunnel stay clean"


@pytest.mark.parametrize(("name", "media_name"), [("china-2017", "mmg.whatsapp.net"),
                                                  ("russia-2021", "pbs.twimg.com")])
def test_shipped_media_rules_match_the_media_name_not_the_address(
    name: str, media_name: str
) -> None:
    scenario = resolve_scenario(name)
    assert scenario.media_name == media_name
    media_rules = [entry.name for entry in scenario.timeline
                   if entry.expect is not None and entry.expect.vantages == ("direct",)
                   and set(entry.expect.features) <= {"photo", "video", "voice"}]
    assert media_rules
    client, media = Endpoint("127.0.0.1", 40000), Endpoint(LOOPBACK_PLAN.media, 8443)
    for rule in scenario.policy.rules:
        if rule.name in media_rules:
            assert "sni" in rule.match.conditions and "server" not in rule.match.conditions
            assert rule.match(FlowRecord(client, media, protocol="tls", sni=media_name))
            assert not rule.match(FlowRecord(client, media, protocol="tls", sni=None))


def test_no_media_name_is_the_default() -> None:
    assert resolve_scenario("gfw-fet-2021").media_name is None
    assert parse_scenario(CHINA.replace("media_name: mmg.whatsapp.net\n", ""),
                          "c.yaml").media_name is None


def test_file_path_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(CHINA.replace("name: china-2017\n", ""), encoding="utf-8")
    assert load_scenario(path).name == "mine"
    assert resolve_scenario(str(path)).name == "mine"
    with pytest.raises(ScenarioError, match=r"nope\.yaml: no such file or shipped scenario"):
        resolve_scenario(str(tmp_path / "nope.yaml"))
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)


def _line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


BROKEN = [
    # (replace, with, field, message fragment, line anchor in the broken text)
    ("features: [text, photo, video, voice]", "features: [text, fax]", "features[1]",
     "unknown value 'fax'", "features:"),
    ("rate_kbps: 32", "rate_kbps: -1", "timeline[2].action.rate_kbps",
     "must be greater than 0", "rate_kbps: -1"),
    ("interval: 24h", "interval: 24h\nspeed: 3", "speed", "unknown key", "speed:"),
    ("interval: 24h", "interval: soon", "interval", "not a duration", "interval:"),
    ("vantages: [direct]}\n  - name: text-flapping", "vantages: [dirct]}\n  - name: text-flapping",
     "timeline[0].expect.vantages[0]", "no vantage called 'dirct'", "vantages: [dirct]"),
    ("expect: {features: [photo, video, voice]", "expect: {features: [photo, location]",
     "timeline[0].expect.features[1]", "'location' is not probed", "features: [photo, location]"),
    ("action: reset", "action: rest", "timeline[0].action", "unknown action 'rest'",
     "action: rest"),
    ("end: 2017-10-25", "end: 2017-01-01", "end", "must be after start", "end:"),
    ("start: 2017-07-01", "start: yesterday", "start", "not an ISO 8601", "start:"),
    ("    source: record\n", "", "timeline[2].source", "is required",
     "- name: noisesocket-throttled"),
    (", transport: tls", "", "vantages[2].transport", "needs a transport", "{name: tunnel-tls"),
    ("{name: control", "{name: direct", "vantages[1].name", "listed twice",
     "{name: direct, path: direct"),
    ("from: 2017-07-17T00:00:00+08:00", "from: 2017-01-17", "timeline[0].active[0].from",
     "after the scenario's start", "from: 2017-01-17"),
    ("match: {protocol: tls", "match: {proto: tls", "timeline[0].match.proto", "unknown key",
     "proto: tls"),
    ("  - name: media-blocked", "  - 3\n  - name: media-blocked", "timeline[0]",
     "must be a mapping", "  - 3"),
    ("action: {kind: flaky, fail: 0.6}", "action: {kind: delay, ms: 5}",
     "timeline[1].expect", "no effect the lab can expect", "action: {kind: delay"),
    ("{name: control, path: direct}", "{name: control, path: direct, background: 3}",
     "vantages[1].background", "only a tunnel vantage", "{name: control"),
    ("{name: control, path: direct}", "{name: control, path: direct, background: -1}",
     "vantages[1].background", "must be at least 0", "{name: control"),
    ("name: noisesocket-blocked", "name: noisesocket-throttled", "timeline[3].name",
     "duplicate rule name", "name: noisesocket-throttled\n    source: illustrative"),
    ("media_name: mmg.whatsapp.net", "media_name: 127.0.10.2", "media_name",
     "is an IP address, not a host name", "media_name:"),
    ("media_name: mmg.whatsapp.net", "media_name: mmg_whatsapp.net", "media_name",
     "is not a host name", "media_name:"),
    # issue 19: overlapping windows, windows with no probe round, absurd intervals
    ("active: [{from: 2017-09-20T00:00:00+08:00, until: 2017-09-25T00:00:00+08:00}]",
     "active: [{from: 2017-09-18T00:00:00+08:00, until: 2017-09-25T00:00:00+08:00}]",
     "timeline[2].active", "at the same time as timeline[1] (text-flapping)",
     "active: [{from: 2017-09-18"),
    ("active: [{from: 2017-09-06T00:00:00+08:00, until: 2017-09-20T00:00:00+08:00}]",
     "active: [{from: 2017-09-06T00:00:00+08:00, until: 2017-09-12T00:00:00+08:00}, "
     "{from: 2017-09-10T00:00:00+08:00, until: 2017-09-20T00:00:00+08:00}]",
     "timeline[1].active[1]", "overlaps window 0 of the same entry",
     "active: [{from: 2017-09-06"),
    ("active: [{from: 2017-09-20T00:00:00+08:00, until: 2017-09-25T00:00:00+08:00}]",
     "active: [{from: 2017-09-20T03:00:00+08:00, until: 2017-09-20T06:00:00+08:00}]",
     "timeline[2].active[0]", "no probe round falls in this window",
     "active: [{from: 2017-09-20T03"),
    ("interval: 24h", "interval: 0.001", "interval", "must be at least 1 s", "interval:"),
    ("interval: 24h", "interval: 30s", "interval", "at most 10,000", "interval:"),
]


@pytest.mark.parametrize(("old", "new", "field", "message", "anchor"), BROKEN,
                         ids=[b[2] + ":" + b[3][:20] for b in BROKEN])
def test_broken_scenario_names_file_line_and_field(
    old: str, new: str, field: str, message: str, anchor: str
) -> None:
    assert old in CHINA
    text = CHINA.replace(old, new, 1)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "broken.yaml")
    error = caught.value
    assert isinstance(error, InputError)
    assert error.file == "broken.yaml"
    assert error.field == field, str(error)
    assert message in error.message, str(error)
    if anchor.startswith("action: {kind: delay"):
        # the expectation is wrong, reported where the expect block is
        assert error.line == _line_of(text, "expect: {features: [text]")
    else:
        assert error.line == _line_of(text, anchor), str(error)
    assert str(error).startswith(f"broken.yaml:{error.line}: {field}: ")


def test_yaml_syntax_error_names_the_line() -> None:
    text = CHINA.replace("start: 2017-07-01", "start: [2017")
    with pytest.raises(ScenarioError, match=r"^broken\.yaml:\d+: invalid YAML"):
        parse_scenario(text, "broken.yaml")


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_garbage_raises_only_scenario_error(text: str) -> None:
    with contextlib.suppress(ScenarioError):
        parse_scenario(text, "fuzz.yaml")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, len(CHINA) - 1), st.integers(1, 40), st.text(max_size=20))
def test_mangled_china_raises_only_scenario_error(at: int, cut: int, insert: str) -> None:
    text = CHINA[:at] + insert + CHINA[at + cut:]
    try:
        parse_scenario(text, "mangled.yaml")
    except ScenarioError as exc:
        assert exc.file == "mangled.yaml"
