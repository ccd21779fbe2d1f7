"""wechat-2017: the rival's server-side filtering and the E2E messenger on one timeline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from noisewall.lab.runner import LabOptions, run_lab
from noisewall.lab.scenario import ScenarioError, parse_scenario, shipped_scenarios
from noisewall.lab.wechat import wechat_truth
from noisewall.observatory.filtered import FilteredEvent

WECHAT = shipped_scenarios()["wechat-2017"]


def test_the_truth_is_the_lists_windows_for_mainland_accounts() -> None:
    scenario = parse_scenario(WECHAT, "wechat-2017.yaml")
    truth = {(e.feature, e.rule, e.onset, e.end) for e in wechat_truth(scenario)}
    days = {e.feature: (e.onset, e.end) for e in wechat_truth(scenario)}
    assert {e.vantage for e in wechat_truth(scenario)} == {"mainland"}
    assert len(truth) == 4
    # A combination listed for groups only filters the group candidate, not the one-to-one one;
    # a combination's terms alone are never filtered.
    assert "keyword:succession-group" in days and "keyword:succession-one" not in days
    assert "keyword:lawyer-name" not in days and "keyword:congress" not in days
    # A forwarded copy of the listed image is filtered while the image is listed; the control
    # image never is.
    assert ("image:chair-forwarded", "empty-chair") in {(e.feature, e.rule)
                                                        for e in wechat_truth(scenario)}
    assert "image:harbour" not in days


@pytest.mark.parametrize(("old", "new", "error"), [
    ("terms: [王全璋, 人权律师]", "terms: []",
     "wechat.lists.keywords[0].terms: must not be empty"),
    ("scope: one_to_one}\n    - {id: lawyer-name", "scope: dm}\n    - {id: lawyer-name",
     "wechat.candidates[0].scope: unknown value 'dm'"),
    ("id: lawyer-name", "id: lawyer", "wechat.candidates[1].id: duplicate candidate 'lawyer'"),
    ("file: wechat-2017/harbour.png", "file: wechat-2017/missing.png",
     "wechat.images[1].file: cannot read"),
    ("file: wechat-2017/empty-chair.png", "file: wechat-2017/harbour.yaml",
     "wechat.lists.images[0].file: cannot read"),
])
def test_a_bad_wechat_section_names_line_and_field(old: str, new: str, error: str) -> None:
    assert old in WECHAT
    text = WECHAT.replace(old, new, 1)
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "w.yaml")
    line = WECHAT[: WECHAT.index(old)].count("\n") + 1
    assert str(caught.value).startswith(f"w.yaml:{line}: {error}"), str(caught.value)


@pytest.mark.slow
@pytest.mark.xdist_group("throughput-a")  # a lab run: see tests/lab/test_shipped.py
def test_wechat_2017_passes_its_scoring_with_both_messengers(tmp_path: Path) -> None:
    scenario = parse_scenario(WECHAT, "wechat-2017.yaml")
    result = asyncio.run(run_lab(scenario, LabOptions(out=tmp_path, seed=2017, arms_race=False)))
    assert result.score.passed, json.dumps(result.score.as_json(), indent=1)
    kinds = {(e.vantage, e.feature, e.kind) for e in result.events}
    assert ("direct", "text", "blocked") in kinds  # the E2E messenger: the network censor
    filtered = [e for e in result.events if isinstance(e, FilteredEvent)]
    assert len(filtered) == 4 and {e.vantage for e in filtered} == {"mainland"}
    assert "image:chair-forwarded" in {e.feature for e in filtered}
    assert all(e.kind != "filtered" for e in result.events if e.feature == "text")
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Two messengers on one timeline" in report and "rival (WeChat mode)" in report
