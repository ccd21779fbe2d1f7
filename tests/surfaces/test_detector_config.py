"""The observatory's detector configuration file: any content gives a config or ConfigError.

The policy (tests/censor/test_policy.py) and scenario (tests/lab/test_scenario.py)
loaders have their own hypothesis tests; this is the third YAML a user hands
noisewall. Random text, random bytes, and a real configuration with any
value (of any YAML type) at any key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.observatory.config import ConfigError, DetectorConfig, load_config

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DEFAULTS: dict[str, dict[str, Any]] = DetectorConfig().model_dump()
VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
    | st.sampled_from([10**400, "1e999", ".nan", "-.inf", "\ud800", "0x10", "~"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6)


def load(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and "\n" not in message.strip(), message
    else:
        assert isinstance(config, DetectorConfig)


CONTENTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from([10, 100, 1000]).map(lambda depth: b"{a: " * depth),
)


@PROPERTY_SETTINGS
@given(content=CONTENTS)
def test_any_bytes_give_a_config_or_config_error(tmp_path: Path, content: bytes) -> None:
    load(tmp_path / "detector.yaml", content)


@PROPERTY_SETTINGS
@given(section=st.sampled_from(sorted(DEFAULTS)), data=st.data())
def test_any_value_at_any_key_gives_a_config_or_config_error(
        tmp_path: Path, section: str, data: st.DataObject) -> None:
    document: dict[str, Any] = {name: dict(values) for name, values in DEFAULTS.items()}
    key = data.draw(st.sampled_from([*sorted(document[section]), "unknown"]))
    document[section][key] = data.draw(VALUES)
    try:
        text = yaml.safe_dump(document, allow_unicode=False)
    except yaml.YAMLError:
        return  # not expressible in YAML
    load(tmp_path / "detector.yaml", text.encode("utf-8", "surrogatepass"))


def test_the_defaults_round_trip(tmp_path: Path) -> None:
    (tmp_path / "detector.yaml").write_text(yaml.safe_dump(DEFAULTS))
    assert load_config(tmp_path / "detector.yaml") == DetectorConfig()


@pytest.mark.parametrize("content", [
    b"cusum: {mu0: .nan}", b"cusum: [1, 2]", b"- 1", b"\xff\xfe", b"a: !!python/name:os",
    b"\x00",  # a reader error: its message ran over two lines
    b"[" * 1000,  # nested too deeply: RecursionError escaped the loader
])
def test_hostile_documents_are_one_line_config_errors(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "detector.yaml").write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        load_config(tmp_path / "detector.yaml")
    assert "\n" not in str(refused.value)
