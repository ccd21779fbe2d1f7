"""Every shipped scenario passes the scoring: shorter variants here, full runs in ``bench lab``.

A variant keeps the shipped timeline (rules, windows, expectations) and only
ends the replay earlier: 16 rounds after the last onset for russia-2021 (every
round of them throttled, so it waits out real throttled transfers), 12 for
gfw-fet-2021 (each blocked round waits out its timeouts). china-2017 runs in
full (about 20 seconds): cut short, its last event (text blocked from 25 Sep)
has too few rounds for the observatory to tell it from the flapping before it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from noisewall.lab.groundtruth import ground_truth
from noisewall.lab.runner import LabOptions, run_lab
from noisewall.lab.scenario import Scenario, parse_scenario, shipped_scenarios

VARIANTS = {
    "china-2017": {},
    "russia-2021": {"end: 2021-03-24": "end: 2021-03-14"},
    "gfw-fet-2021": {"end: 2021-12-01": "end: 2021-11-12"},
}


def variant(name: str) -> str:
    text = shipped_scenarios()[name]
    for old, new in VARIANTS[name].items():
        assert old in text, f"{name}: {old!r} moved; update the variant"
        text = text.replace(old, new)
    return text


#: Throughput-timed tests run in two xdist groups (pyproject.toml, --dist loadgroup),
#: so at most two of them compete for the CPU at once.
GROUPS = {"china-2017": "throughput-b", "russia-2021": "throughput-b",
          "gfw-fet-2021": "throughput-a"}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.xdist_group(group))
                                  for name, group in sorted(GROUPS.items())])
def test_shipped_scenario_variant_passes_scoring(name: str, tmp_path: Path) -> None:
    scenario = parse_scenario(variant(name), f"{name}-ci.yaml")
    full = parse_scenario(shipped_scenarios()[name], f"{name}.yaml")
    def events(s: Scenario) -> set[tuple[str, str, str, str, float]]:
        return {(e.rule, e.vantage, e.feature, e.kind, e.onset) for e in ground_truth(s)}

    assert events(scenario) == events(full), "a variant keeps every ground-truth event"
    result = asyncio.run(run_lab(scenario, LabOptions(out=tmp_path, seed=2017, arms_race=False)))
    assert result.score.passed, json.dumps(result.score.as_json(), indent=1)
    assert result.score.pairs and not result.score.false_alarms
