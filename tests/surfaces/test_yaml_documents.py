"""A real policy and a real scenario with any value put at any node: the model or its error.

The loaders' own hypothesis tests throw random text at them; these start from
documents that pass (the policy reference's layout example, a shipped
scenario) and change one node, so the values reach the validation of every
field rather than stopping at the YAML parser. Each gives the model, or the
typed error in one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.censor.policy import Policy, PolicyError, parse_policy
from noisewall.lab.scenario import Scenario, ScenarioError, parse_scenario

ROOT = Path(__file__).resolve().parents[2]
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LAYOUT = re.search(r"```yaml\n(.*?)```", (ROOT / "docs/censor-policy.md").read_text(), re.S)
assert LAYOUT is not None, "docs/censor-policy.md lost its layout example"
POLICY = yaml.safe_load(LAYOUT.group(1))
SCENARIO = yaml.safe_load((ROOT / "scenarios/china-2017.yaml").read_text())

ODD: st.SearchStrategy[Any] = st.sampled_from([
    "re:(", "re:(a+)+$", "re:", "*", "", "\0", "2017-13-45", "2017-07-17T25:00:00", "24h", "-1s",
    "0s", "1e999", "nan", "-inf", 2**64, -1, 0, 1.5, float("inf"), "127.0.0.1/33", "::1/129",
    "0-99999", "443-80", "reset", "throttle", {"kind": "throttle"}, {"kind": "nope"}, [], {},
    None, True])
VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | ODD,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["kind", "from", "until", "rate", "sni", "name"]) | st.text(max_size=5),
        inner, max_size=3),
    max_leaves=6)


def paths(node: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node's path in a decoded YAML document (keys and list indexes)."""
    found = [here] if here else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*here, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*here, index))
    return found


def changed(document: Any, data: st.DataObject) -> str:
    document = yaml.safe_load(yaml.safe_dump(document))
    path = data.draw(st.sampled_from(paths(document)))
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        parent[data.draw(st.sampled_from(["x", "kind", "match", "action"]))] = data.draw(VALUES)
    else:
        parent[path[-1]] = data.draw(VALUES)
    return yaml.safe_dump(document, allow_unicode=True)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_a_policy_with_any_node_changed_parses_or_is_one_policy_error(
        data: st.DataObject) -> None:
    text = changed(POLICY, data)
    try:
        assert isinstance(parse_policy(text, "p.yaml"), Policy)
    except PolicyError as exc:
        assert str(exc).startswith("p.yaml") and "\n" not in str(exc), str(exc)


@pytest.mark.slow
@settings(PROPERTY_SETTINGS, max_examples=100)
@given(data=st.data())
def test_a_scenario_with_any_node_changed_parses_or_is_one_scenario_error(
        data: st.DataObject) -> None:
    text = changed(SCENARIO, data)
    try:
        assert isinstance(parse_scenario(text, "s.yaml"), Scenario)
    except ScenarioError as exc:
        assert str(exc).startswith("s.yaml") and "\n" not in str(exc), str(exc)
