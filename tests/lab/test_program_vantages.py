"""Program vantages in the lab: real curl, unmodified, measured and scored like a probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noisewall.lab.runner import LabOptions, run_lab
from noisewall.lab.scenario import ScenarioError, parse_scenario
from tests.netns import require_program


@pytest.fixture
def needs_curl() -> None:
    require_program("curl", "curl")

#: Media reset by SNI after a baseline; curl fetches the media server's page by that name.
CURL = """\
name: curl-media
start: 2017-07-01
end: 2017-07-07
interval: 12h
media_name: mmg.whatsapp.net
features: [photo]
vantages:
  - {name: direct, path: censor}
  - {name: control, path: direct}
  - name: curl
    path: program
    feature: photo
    timeout: 5s
    command: [curl, -sS, -k, --max-time, "3",
              --resolve, "{media_name}:{media_port}:{media_host}",
              "https://{media_name}:{media_port}/"]
timeline:
  - name: media-blocked
    source: illustrative
    match: {protocol: tls, sni: "mmg*.whatsapp.net"}
    action: reset
    active: [{from: 2017-07-03T12:00:00Z}]
    expect: {features: [photo], vantages: [direct, curl]}
"""


@pytest.mark.usefixtures("needs_curl")
@pytest.mark.slow
@pytest.mark.xdist_group("throughput-b")  # scores timed probes: see tests/lab/test_shipped.py
async def test_curl_as_a_vantage_is_detected_and_scored(tmp_path: Path) -> None:
    scenario = parse_scenario(CURL, "curl-media.yaml")
    result = await run_lab(scenario, LabOptions(out=tmp_path, seed=1, arms_race=False))
    lines = [json.loads(line) for line in
             (tmp_path / "measurements.jsonl").read_text(encoding="utf-8").splitlines()]
    curl = [m for m in lines if m["annotations"]["vantage"] == "curl"]
    assert len(curl) == 12
    outcomes = [(m["test_keys"]["program"]["exit_status"],
                 m["test_keys"]["features"]["photo"]["failure"]) for m in curl]
    assert outcomes[:5] == [(0, None)] * 5  # before the rule: the page loads
    assert all(status != 0 and failure == "connection_reset" for status, failure in outcomes[5:])
    assert result.score.passed, result.score.rows()
    assert {(e.vantage, e.feature) for e in result.truth} == {("direct", "photo"),
                                                              ("curl", "photo")}


@pytest.mark.slow
async def test_a_missing_and_a_hanging_program_fail_their_measurements_only(
        tmp_path: Path) -> None:
    text = CURL.replace("expect: {features: [photo], vantages: [direct, curl]}",
                        "expect: {features: [photo]}").replace(
        """  - name: curl
    path: program""", """  - name: missing
    path: program
    feature: photo
    command: [/nonexistent/noisewall-no-such-program]
  - name: hangs
    path: program
    feature: photo
    timeout: 0.5s
    command: [sleep, "60"]
  - name: curl
    path: program""")
    scenario = parse_scenario(text, "bad-programs.yaml")
    await run_lab(scenario, LabOptions(out=tmp_path, seed=1, arms_race=False))
    lines = [json.loads(line) for line in
             (tmp_path / "measurements.jsonl").read_text(encoding="utf-8").splitlines()]
    by_vantage: dict[str, set[str | None]] = {}
    for m in lines:
        by_vantage.setdefault(m["annotations"]["vantage"], set()).add(
            m["test_keys"]["features"]["photo"]["failure"])
    assert by_vantage["missing"] == {"unknown_failure: program_not_found"}
    assert by_vantage["hangs"] == {"generic_timeout_error"}
    assert len([m for m in lines if m["annotations"]["vantage"] == "control"]) == 12


@pytest.mark.parametrize(("change", "message"), [
    ("feature: photo\n    timeout: 5s", "program vantage says which feature"),
    ('"https://{media_name}:{media_port}/"]', "unknown placeholder {media_port_}"),
    ("path: program", "a program vantage needs a command"),
])
def test_bad_program_vantages_are_refused_with_file_line_and_field(change: str,
                                                                   message: str) -> None:
    replacement = {
        "feature: photo\n    timeout: 5s": "timeout: 5s",
        '"https://{media_name}:{media_port}/"]': '"https://{media_name}:{media_port_}/"]',
        "path: program": "path: program\n    command: []",
    }[change]
    text = CURL.replace(change, replacement, 1)
    if change == "path: program":
        text = text.replace("""    command: [curl, -sS, -k, --max-time, "3",
              --resolve, "{media_name}:{media_port}:{media_host}",
              "https://{media_name}:{media_port}/"]
""", "")
    with pytest.raises(ScenarioError, match=r"curl-media\.yaml:[0-9]+: vantages") as caught:
        parse_scenario(text, "curl-media.yaml")
    assert message in str(caught.value)
