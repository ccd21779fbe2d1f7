"""Reading a policy file: YAML with line numbers, validation, ``file:line: field: message``
errors, and compilation into a :class:`~noisewall.censor.policy.model.Policy`."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from noisewall.censor.policy.actions import (
    ACTION_KINDS,
    DEFAULT_STALL_AFTER_BYTES,
    Action,
    ActionKind,
)
from noisewall.censor.policy.match import Match
from noisewall.censor.policy.model import Policy, Rule, Window
from noisewall.censor.policy.schema import (
    ACTION_SPECS,
    DelaySpec,
    DnsSpec,
    FlakySpec,
    MatchSpec,
    PolicySpec,
    RuleSpec,
    ThrottleSpec,
    WindowSpec,
)
from noisewall.yamlspec import (
    Describe,
    LineTracker,
    SpecError,
    SpecPath,
    compose_spec,
    field_name,
    line_of,
    model_keys,
    read_spec_text,
    schema_message,
    validation_error,
)

#: What a ``transport: udp`` rule may use: nftables enforces it in the kernel, per packet.
UDP_CONDITIONS = ("transport", "server", "port")
UDP_ACTIONS = ("allow", "drop")




class PolicyError(SpecError):
    """An invalid policy: which file, which line (1-based), which field, and what is wrong."""





def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate policy YAML; ``source`` names it in errors.

    Raises :class:`PolicyError` (and nothing else) on any invalid input.
    """
    node = compose_spec(text, source, PolicyError)
    if node is None:
        raise PolicyError(source, 1, None, "empty policy: expected a mapping with a 'rules' list")
    return policy_from_node(node, source)


def load_policy(path: Path | str) -> Policy:
    """Read and parse the policy file at ``path``; errors name the file as given."""
    return parse_policy(read_spec_text(path, PolicyError), str(path))


def policy_from_node(node: yaml.Node, source: str) -> Policy:
    """Build a policy from an already composed YAML node.

    Line numbers in errors are those of the node's document.
    """
    tracker = LineTracker(source, PolicyError, "policy")
    data = tracker.convert(node)
    if not isinstance(data, dict):
        raise PolicyError(source, tracker.lines[()], None,
                          "a policy is a mapping with a 'rules' list")
    return compile_policy(data, tracker.lines, source)


def compile_policy(data: dict[str, Any], lines: Mapping[SpecPath, int], source: str, *,
                   rules_at: SpecPath = ("rules",),
                   error: type[SpecError] = PolicyError) -> Policy:
    """Validate and compile policy data (``rules``, ``description``) read from a document.

    ``lines`` are the document's (:class:`~noisewall.yamlspec.LineTracker`),
    where the rule list sits at ``rules_at``: a policy file's ``rules``, or a
    lab scenario's ``timeline``, whose entries are rules. Errors are ``error``
    naming that document's lines and fields.
    """
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, lines, source, error, _describer(data, rules_at)) from None
    return _Compiler(lines, source, rules_at, error).compile(spec)


def _child(cur: Any, part: str | int) -> tuple[bool, Any]:
    """``(True, cur[part])`` if that element exists in the data, else ``(False, None)``."""
    if isinstance(cur, dict) and part in cur:
        return True, cur[part]
    if isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
        return True, cur[part]
    return False, None


def _locate(loc: tuple[str | int, ...], data: Any) -> tuple[SpecPath, SpecPath]:
    """Map a pydantic error location onto the data: (display path, deepest existing path)."""
    display: list[str | int] = []
    found: list[str | int] = []
    cur: Any = data
    exists = True
    for part in loc:
        ok, child = _child(cur, part) if exists else (False, None)
        if ok:
            cur = child
            display.append(part)
            found.append(part)
        elif (
            isinstance(part, str)
            and part in ACTION_SPECS
            and (cur == part or (isinstance(cur, dict) and cur.get("kind") == part))
        ):
            continue  # the discriminated union's tag, not a field
        elif isinstance(part, str):
            exists = False
            display.append(part)
        else:
            exists = False  # an index into a value given as a single item
    return tuple(display), tuple(found)


def _message(error: ErrorDetails, display: SpecPath, data: Any) -> tuple[SpecPath, str]:
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        at_kind = (*display, "kind") if kind == "union_tag_invalid" else display
        if not isinstance(_value_at(display, data), dict):
            at_kind = display
        tag = (error.get("ctx") or {}).get("tag")
        head = f"unknown action {tag!r}" if tag is not None else "needs a 'kind'"
        return at_kind, f"{head} (expected one of: {', '.join(ACTION_KINDS)})"
    model = _model_at(display[:-1], data)
    return display, schema_message(error, model_keys(model) if model else None)


def _value_at(path: SpecPath, data: Any) -> Any:
    cur = data
    for part in path:
        ok, cur = _child(cur, part)
        if not ok:
            return None
    return cur


def _model_at(path: SpecPath, data: Any) -> type[BaseModel] | None:
    names = tuple(p for p in path if isinstance(p, str))
    if names == ("rules", "action"):
        node = _value_at(path, data)
        kind = node.get("kind") if isinstance(node, dict) else None
        return ACTION_SPECS.get(kind) if isinstance(kind, str) else None
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): PolicySpec,
        ("rules",): RuleSpec,
        ("rules", "match"): MatchSpec,
        ("rules", "active"): WindowSpec,
    }
    return models.get(names)


def _describer(data: Any, rules_at: SpecPath) -> Describe:
    """How :func:`validation_error` words a schema error of the policy ``data``."""

    def in_document(path: SpecPath) -> SpecPath:
        return (*rules_at, *path[1:]) if path[:1] == ("rules",) else path

    def describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
        display, data_path = _locate(tuple(error["loc"]), data)
        display, message = _message(error, display, data)
        if display[len(data_path) :] == ("kind",):
            data_path = (*data_path, "kind")  # the line of 'kind' itself, when written
        return in_document(data_path), in_document(display), message

    return describe


def _timestamp(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _action(spec: Any) -> Action:
    if isinstance(spec, ThrottleSpec):
        return Action("throttle", rate_kbps=spec.rate_kbps)
    if isinstance(spec, DelaySpec):
        return Action("delay", ms=spec.ms)
    if isinstance(spec, FlakySpec):
        stall = spec.stall_after_bytes
        if stall is None:
            stall = DEFAULT_STALL_AFTER_BYTES if spec.mode == "stall" else 0
        return Action("flaky", fail=spec.fail, mode=spec.mode, stall_after_bytes=stall)
    if isinstance(spec, DnsSpec):
        return Action("dns", answer=spec.answer)
    kind: ActionKind = spec.kind
    return Action(kind)


class _Compiler:
    """Checks that span fields (names, modes, udp limits) and the runtime :class:`Policy`."""

    def __init__(self, lines: Mapping[SpecPath, int], source: str, rules_at: SpecPath,
                 error: type[SpecError]) -> None:
        self.lines = lines
        self.source = source
        self.rules_at = rules_at
        self.error_type = error

    def error(self, at: SpecPath, message: str) -> SpecError:
        return self.error_type(self.source, line_of(self.lines, at), field_name(at), message)

    def compile(self, spec: PolicySpec) -> Policy:
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        for index, rule in enumerate(spec.rules):
            here: SpecPath = (*self.rules_at, index)
            name = rule.name if rule.name is not None else f"rule-{index + 1}"
            if name in seen:
                raise self.error((*here, "name"), f"duplicate rule name {name!r} "
                                 f"(also {field_name((*self.rules_at, seen[name]))})")
            seen[name] = index
            action = rule.action
            stall_bytes = action.stall_after_bytes if isinstance(action, FlakySpec) else None
            if isinstance(action, FlakySpec) and stall_bytes is not None and action.mode != "stall":
                raise self.error((*here, "action", "stall_after_bytes"), "only with mode: stall")
            if rule.residual > 0 and rule.action.kind == "allow":
                raise self.error((*here, "residual"), "residual needs a blocking action, not allow")
            if rule.match.transport == "udp":
                self._check_udp_rule(rule, here)
            windows = tuple(Window(_timestamp(w.start), _timestamp(w.until))
                            for w in rule.active or ())
            rules.append(
                Rule(
                    name=name,
                    match=Match(rule.match),
                    action=_action(rule.action),
                    probability=rule.probability,
                    residual=rule.residual,
                    active=windows,
                    line=line_of(self.lines, here),
                )
            )
        return Policy(rules, source=self.source, description=spec.description)

    def _check_udp_rule(self, rule: RuleSpec, here: SpecPath) -> None:
        """A ``transport: udp`` rule becomes an nftables rule: only what nftables can do."""
        given = rule.match.model_dump(exclude_none=True)
        for condition in given:
            if condition not in UDP_CONDITIONS:
                raise self.error((*here, "match", condition),
                                 f"not for udp rules (they match {', '.join(UDP_CONDITIONS)})")
        for entry in rule.match.server or ():
            try:
                ipaddress.IPv4Network(entry)
            except ValueError:
                raise self.error((*here, "match", "server"), "udp rules match IPv4 addresses "
                                 f"or CIDRs, not {entry!r}") from None
        if rule.action.kind not in UDP_ACTIONS:
            raise self.error((*here, "action"), f"udp rules {' or '.join(UDP_ACTIONS)}")
        for name, default in (("probability", 1.0), ("residual", 0.0), ("active", None)):
            if getattr(rule, name) != default:
                raise self.error((*here, name),
                                 "not for udp rules (enforced in the kernel, per packet)")
