r"""Lab scenarios: YAML files with a span, a probe plan and a censor timeline (the ground truth).

A scenario says what to replay: the simulated span and probe interval, the
messenger features probed, the vantage points they are probed from, and a
timeline of censor rules. Each timeline entry is a censor policy rule
(``docs/censor-policy.md``: ``match``, ``action``, ``probability``,
``residual``, ``active``) plus what the lab expects it to do (``expect``) and
where its dates come from (``source``). The timeline, in order, *is* the
censor's policy (first match wins), and its ``expect`` blocks *are* the
ground truth the observatory is scored against. Full reference:
``docs/lab.md``.

Any error raises :class:`ScenarioError` naming file, line and field, e.g.
``china-2017.yaml:41: timeline[2].expect.features[0]: unknown feature 'fax'``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from noisewall.censor.policy import Policy, compile_policy
from noisewall.censor.policy.model import Window
from noisewall.lab.wechat_plan import WeChatPlan, parse_wechat_plan
from noisewall.probe.program import ProgramTemplateError, placeholders
from noisewall.records.names import TRANSPORT_NAMES, Feature, TransportName
from noisewall.selfsigned import dns_name
from noisewall.yamlspec import (
    LineTracker,
    SpecError,
    SpecPath,
    When,
    compose_spec,
    field_name,
    line_of,
    model_keys,
    read_spec_text,
    schema_message,
    validation_error,
)

__all__ = [
    "KINDS",
    "Expectation",
    "Scenario",
    "ScenarioError",
    "TimelineEntry",
    "Vantage",
    "load_scenario",
    "parse_scenario",
    "resolve_scenario",
    "shipped_scenarios",
]

Kind: TypeAlias = Literal["blocked", "throttled", "intermittent"]
VantagePath: TypeAlias = Literal["censor", "direct", "tunnel", "program"]
#: Third-party tunnels the arms race can run (Debian packages, unmodified; ``--net`` only).
ThirdPartyTunnel: TypeAlias = Literal["shadowsocks-libev"]
#: What a program vantage's command may name: the lab fills them in each run.
PROGRAM_PLACEHOLDERS = ("chat_host", "chat_port", "media_host", "media_port", "media_name")
_PROGRAM_TIMEOUT = 10.0
KINDS: tuple[str, ...] = ("blocked", "throttled", "intermittent")
#: Keys of a timeline entry that belong to the lab, not to the censor rule.
_LAB_KEYS = ("expect", "source", "note")
#: The shipped scenarios' folder inside the package.
SHIPPED = "scenarios"
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LABEL = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
#: Shortest probe interval: a round measures every feature of every vantage, for seconds.
MIN_INTERVAL = 1.0
#: Most probe rounds a span may hold: a round costs the lab 0.1-2 s of wall time.
MAX_ROUNDS = 10_000


class ScenarioError(SpecError):
    """An invalid scenario: which file, which line (1-based), which field, and what is wrong."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Vantage:
    """Where probes run from: ``censor`` (through the middlebox), ``direct``
    (straight to the server: the control), ``tunnel`` (through the censor
    inside a circumvention ``transport``), or ``program`` (an unmodified
    ``command`` run each round across the censor, measuring ``feature``).
    ``background``: connections the user's other traffic opens through a
    tunnel at the start of each round."""

    name: str
    path: VantagePath
    transport: TransportName | None = None
    background: int = 0
    command: tuple[str, ...] = ()
    feature: Feature | None = None
    timeout: float = _PROGRAM_TIMEOUT

    def measures(self, feature: str) -> bool:
        """Whether this vantage measures ``feature`` (a program measures its own only)."""
        return self.path != "program" or feature == self.feature


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a timeline entry should do to which probes: the ground truth."""

    kind: Kind
    features: tuple[str, ...]
    vantages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One censor rule of the timeline with its provenance and expected effect."""

    name: str
    source: Literal["record", "illustrative"]
    note: str | None
    expect: Expectation | None
    line: int


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Times are POSIX seconds (UTC); ``end`` is exclusive.

    ``media_name`` is the media server's public host name (sent as the TLS SNI
    by every media client, so timeline rules can match ``sni``), None for none.
    """

    name: str
    description: str | None
    path: str
    start: float
    end: float
    interval: float
    network_name: str
    asn: str
    cc: str
    media_name: str | None
    features: tuple[Feature, ...]
    vantages: tuple[Vantage, ...]
    timeline: tuple[TimelineEntry, ...]
    policy: Policy
    arms_race_connections: int
    arms_race_transports: tuple[TransportName, ...]
    arms_race_third_party: tuple[ThirdPartyTunnel, ...] = ()
    wechat: WeChatPlan | None = None
    """The rival's lists and the keyword probe's candidates (a ``wechat`` section), if any."""

    @property
    def rounds(self) -> int:
        """How many probe rounds the span holds (one at ``start``, then every ``interval``)."""
        return int((self.end - self.start - 1e-9) // self.interval) + 1

    def vantage(self, name: str) -> Vantage:
        """The vantage called ``name``."""
        for vantage in self.vantages:
            if vantage.name == name:
                return vantage
        raise KeyError(name)


# --------------------------------------------------------------------------- schema


def parse_duration(value: Any) -> Any:
    """A duration (``12h``, ``30m``, ``1d``, or seconds) in seconds; ValueError if not one."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 12h, 30m, 1d or seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (m := _INTERVAL.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration like 12h, 30m, 1d or seconds")


def _label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError(f"{value!r} is not a label (lower-case letters, digits, '.', '_', '-')")
    return value


def _host_name(value: Any) -> Any:
    return dns_name(value) if isinstance(value, str) else value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Label = Annotated[str, BeforeValidator(lambda v: _label(v) if isinstance(v, str) else v)]


class _NetworkSpec(_Spec):
    name: Annotated[str, Field(min_length=1)] = "lab"
    asn: Annotated[str, Field(pattern=r"^AS\d+$")] = "AS0"
    cc: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "ZZ"


class _VantageSpec(_Spec):
    name: _Label
    path: VantagePath
    transport: TransportName | None = None
    background: Annotated[int, Field(ge=0, le=100)] = 0
    command: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    feature: Feature | None = None
    timeout: Annotated[float, BeforeValidator(parse_duration),
                       Field(gt=0, le=600, allow_inf_nan=False)] = _PROGRAM_TIMEOUT


class _ExpectSpec(_Spec):
    kind: Kind | None = None
    features: Annotated[tuple[Feature, ...], Field(min_length=1)]
    vantages: Annotated[tuple[_Label, ...], Field(min_length=1)] = ("direct",)


class _EntrySpec(BaseModel):
    # The rule keys (match, action, ...) are the censor policy's to validate.
    model_config = ConfigDict(extra="allow", frozen=True)
    name: _Label
    source: Literal["record", "illustrative"]
    note: str | None = None
    expect: _ExpectSpec | None = None


class _ArmsRaceSpec(_Spec):
    connections: Annotated[int, Field(ge=1, le=10000)] = 200
    third_party: tuple[ThirdPartyTunnel, ...] = ()
    transports: Annotated[tuple[TransportName, ...], Field(min_length=1)] = TRANSPORT_NAMES


class _ScenarioSpec(_Spec):
    name: _Label | None = None
    description: str | None = None
    start: When
    end: When
    interval: Annotated[float, BeforeValidator(parse_duration), Field(gt=0, allow_inf_nan=False)]
    network: _NetworkSpec = _NetworkSpec()
    media_name: Annotated[str | None, BeforeValidator(_host_name)] = None
    features: Annotated[tuple[Feature, ...], Field(min_length=1)]
    vantages: Annotated[tuple[_VantageSpec, ...], Field(min_length=1)]
    timeline: tuple[_EntrySpec, ...]
    arms_race: _ArmsRaceSpec | None = None
    wechat: dict[str, Any] | None = None  # validated by lab/wechat_plan.py


_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): _ScenarioSpec,
    ("network",): _NetworkSpec,
    ("vantages",): _VantageSpec,
    ("timeline", "expect"): _ExpectSpec,
    ("arms_race",): _ArmsRaceSpec,
}


# --------------------------------------------------------------------------- loading

def _describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
    """How :func:`validation_error` words a schema error of a scenario."""
    path = tuple(error["loc"])
    model = _MODELS.get(tuple(p for p in path[:-1] if isinstance(p, str)))
    return path, path, schema_message(error, model_keys(model) if model else None)


def _policy(data: dict[str, Any], lines: Mapping[SpecPath, int], source: str,
            description: str | None) -> Policy:
    """The censor policy the timeline is: each entry minus the lab's own keys is a rule."""
    rules = [{key: value for key, value in entry.items() if key not in _LAB_KEYS}
             for entry in data["timeline"]]
    policy = compile_policy({"rules": rules}, lines, source, rules_at=("timeline",),
                            error=ScenarioError)
    return Policy(policy.rules, source=source, description=description)


def _implied_kind(policy: Policy, index: int) -> Kind | None:
    rule = policy.rules[index]
    action = rule.action
    if action.kind in ("allow", "delay"):
        return None
    if action.kind == "throttle":
        return "throttled"
    if action.kind == "flaky" or rule.probability < 1.0:
        return "intermittent"
    return "blocked"


def _check(spec: _ScenarioSpec, policy: Policy, lines: Mapping[SpecPath, int],
           source: str) -> list[TimelineEntry]:
    def fail(path: SpecPath, message: str) -> ScenarioError:
        return ScenarioError(source, line_of(lines, path), field_name(path), message)

    if spec.end <= spec.start:
        raise fail(("end",), "must be after start")
    span = (spec.end - spec.start).total_seconds()
    if spec.interval > span:
        raise fail(("interval",), "is longer than the whole span from start to end")
    if spec.interval < MIN_INTERVAL:
        raise fail(("interval",), f"must be at least {MIN_INTERVAL:g} s (a round probes every "
                   "feature of every vantage)")
    if span / spec.interval >= MAX_ROUNDS:
        raise fail(("interval",), f"gives {int(span // spec.interval) + 1:,} probe rounds over the "
                   f"span; at most {MAX_ROUNDS:,} (take a longer interval or a shorter span)")
    names = [v.name for v in spec.vantages]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise fail(("vantages", index, "name"), f"vantage {name!r} is listed twice")
    for index, vantage in enumerate(spec.vantages):
        if (vantage.path == "tunnel") != (vantage.transport is not None):
            raise fail(("vantages", index, "transport"),
                       "a tunnel vantage needs a transport; other paths take none")
        if vantage.background and vantage.path != "tunnel":
            raise fail(("vantages", index, "background"), "only a tunnel vantage has one")
        _check_program(vantage, spec, ("vantages", index), fail)
    for index, feature in enumerate(spec.features):
        if feature in spec.features[:index]:
            raise fail(("features", index), f"feature {feature!r} is listed twice")
    entries = []
    start, end = spec.start.timestamp(), spec.end.timestamp()
    for index, entry in enumerate(spec.timeline):
        rule = policy.rules[index]
        here: SpecPath = ("timeline", index)
        expectation = None
        if entry.expect is not None:
            at: SpecPath = (*here, "expect")
            implied = _implied_kind(policy, index)
            if implied is None:
                raise fail((*at,), f"action {rule.action.kind} has no effect the lab can expect")
            for f_index, feature in enumerate(entry.expect.features):
                if feature not in spec.features:
                    raise fail((*at, "features", f_index), f"feature {feature!r} is not probed "
                               f"(features: {', '.join(spec.features)})")
            for v_index, label in enumerate(entry.expect.vantages):
                if label not in names:
                    raise fail((*at, "vantages", v_index), f"no vantage called {label!r} "
                               f"(vantages: {', '.join(names)})")
                program = spec.vantages[names.index(label)]
                if program.path == "program" and program.feature not in entry.expect.features:
                    raise fail((*at, "vantages", v_index), f"program vantage {label!r} "
                               f"measures only {program.feature}, not listed here")
            if not rule.active:
                raise fail((*here, "active"), "an expected effect needs an active window with "
                           "a 'from' after the start (the observatory needs a baseline)")
            for w_index, window in enumerate(rule.active):
                if window.start is None or not start < window.start < end:
                    raise fail((*here, "active", w_index, "from"),
                               "must lie after the scenario's start and before its end")
            expectation = Expectation(entry.expect.kind or implied, tuple(entry.expect.features),
                                      tuple(entry.expect.vantages))
        entries.append(TimelineEntry(entry.name, entry.source, entry.note, expectation,
                                     line_of(lines, here)))
    _check_windows(spec, policy, entries, fail)
    return entries


def _round_times(spec: _ScenarioSpec) -> list[float]:
    start, end = spec.start.timestamp(), spec.end.timestamp()
    return [start + k * spec.interval
            for k in range(int((end - start - 1e-9) // spec.interval) + 1)]


def _check_windows(spec: _ScenarioSpec, policy: Policy, entries: list[TimelineEntry],
                   fail: Callable[[SpecPath, str], ScenarioError]) -> None:
    """Every window holds a probe round; one rule's windows and the ground truth never overlap.

    A window no round falls in changes nothing the lab measures; two expected
    effects at once on one (vantage, feature) contradict the observatory's one
    state at a time, and overlapping windows of one rule say one thing twice.
    """
    rounds = _round_times(spec)
    for index, rule in enumerate(policy.rules):
        for w_index, window in enumerate(rule.active):
            if not any(window.contains(t) for t in rounds):
                raise fail(("timeline", index, "active", w_index),
                           "no probe round falls in this window (rounds every "
                           f"{spec.interval:g} s from start)")
            for o_index, other in enumerate(rule.active[:w_index]):
                if _overlap(window, other):
                    raise fail(("timeline", index, "active", w_index),
                               f"overlaps window {o_index} of the same entry")
    for index, entry in enumerate(entries):
        for o_index, earlier in enumerate(entries[:index]):
            if entry.expect is None or earlier.expect is None:
                continue
            series = [(v, f) for v in entry.expect.vantages for f in entry.expect.features
                      if v in earlier.expect.vantages and f in earlier.expect.features]
            if series and any(_overlap(a, b) for a in policy.rules[index].active
                              for b in policy.rules[o_index].active):
                vantage, feature = series[0]
                raise fail(("timeline", index, "active"),
                           f"expected at the same time as timeline[{o_index}] ({earlier.name}) on "
                           f"vantage {vantage!r}, feature {feature!r}: the ground truth is one "
                           "state at a time")


def _overlap(a: Window, b: Window) -> bool:
    def bounds(window: Window) -> tuple[float, float]:
        return (-math.inf if window.start is None else window.start,
                math.inf if window.until is None else window.until)

    (a_start, a_until), (b_start, b_until) = bounds(a), bounds(b)
    return a_start < b_until and b_start < a_until


def _check_program(vantage: _VantageSpec, spec: _ScenarioSpec, here: SpecPath,
                   fail: Callable[[SpecPath, str], ScenarioError]) -> None:
    if vantage.path != "program":
        for key in ("command", "feature"):
            if getattr(vantage, key):
                raise fail((*here, key), "only a program vantage has one")
        return
    if not vantage.command:
        raise fail((*here, "command"), "a program vantage needs a command (a list of arguments)")
    if vantage.feature is None:
        raise fail((*here, "feature"), "a program vantage says which feature it measures")
    if vantage.feature not in spec.features:
        raise fail((*here, "feature"), f"feature {vantage.feature!r} is not probed "
                   f"(features: {', '.join(spec.features)})")
    try:
        unknown = placeholders(vantage.command) - set(PROGRAM_PLACEHOLDERS)
    except ProgramTemplateError as exc:
        raise fail((*here, "command"), str(exc)) from None
    if unknown:
        raise fail((*here, "command"), f"unknown placeholder {{{sorted(unknown)[0]}}} "
                   f"(known: {', '.join(PROGRAM_PLACEHOLDERS)})")


def parse_scenario(text: str, source: str = "<scenario>", base: Path | None = None) -> Scenario:
    """Parse and validate scenario YAML; ``source`` names it in errors (and is the default name).

    Files the scenario names (the ``wechat`` section's images) are read from
    ``base``; by default the folder of ``source`` if it is a file, else the
    shipped scenarios' folder (a shipped scenario parsed from its text).

    Raises :class:`ScenarioError` (and nothing else) on any invalid input.
    """
    node = compose_spec(text, source, ScenarioError)
    if not isinstance(node, yaml.MappingNode):
        raise ScenarioError(source, 1, None, "a scenario is a mapping (see docs/lab.md)")
    tracker = LineTracker(source, ScenarioError, "scenario")
    data = tracker.convert(node)
    lines = tracker.lines
    try:
        spec = _ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, lines, source, ScenarioError, _describe) from None
    policy = _policy(data, lines, source, spec.description)
    entries = _check(spec, policy, lines, source)
    race = spec.arms_race
    return Scenario(
        name=spec.name or Path(source).stem,
        description=spec.description,
        path=source,
        start=spec.start.timestamp(),
        end=spec.end.timestamp(),
        interval=spec.interval,
        network_name=spec.network.name,
        asn=spec.network.asn,
        cc=spec.network.cc,
        media_name=spec.media_name,
        features=tuple(spec.features),
        vantages=tuple(Vantage(v.name, v.path, v.transport, v.background, v.command,
                               v.feature, v.timeout) for v in spec.vantages),
        timeline=tuple(entries),
        policy=policy,
        arms_race_connections=race.connections if race is not None else 0,
        arms_race_transports=tuple(race.transports) if race is not None else (),
        arms_race_third_party=tuple(race.third_party) if race is not None else (),
        wechat=None if spec.wechat is None else parse_wechat_plan(
            _value_node(node, "wechat"), source, ScenarioError, base or _folder_of(source)),
    )


def _folder_of(source: str) -> Path:
    """Where a scenario's files are: beside its file, or (shipped, or text) the shipped folder."""
    path = Path(source)
    return path.parent if path.is_file() else Path(str(resources.files("noisewall.lab"))) / SHIPPED


def _value_node(node: yaml.MappingNode, key: str) -> yaml.Node:
    value: yaml.Node = next(value for name, value in node.value
                            if isinstance(name, yaml.ScalarNode) and name.value == key)
    return value


def load_scenario(path: Path | str) -> Scenario:
    """Read and parse the scenario file at ``path``; errors name the file as given."""
    return parse_scenario(read_spec_text(path, ScenarioError), str(path))


def shipped_scenarios() -> dict[str, str]:
    """Name -> YAML text of the scenarios shipped inside the package."""
    folder = resources.files("noisewall.lab") / SHIPPED
    return {item.name.removesuffix(".yaml"): item.read_text(encoding="utf-8")
            for item in folder.iterdir() if item.name.endswith(".yaml")}


def resolve_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name (``china-2017``), else a scenario file by path."""
    shipped = shipped_scenarios()
    if name_or_path in shipped:
        return parse_scenario(shipped[name_or_path], f"{name_or_path}.yaml")
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(shipped))
        raise ScenarioError(name_or_path, None, None,
                            f"no such file or shipped scenario (shipped: {known})")
    return load_scenario(path)
