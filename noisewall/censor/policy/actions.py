"""What the censor does to a flow: actions and the per-flow decision (sans-IO)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

ActionKind: TypeAlias = Literal["allow", "reset", "drop", "delay", "throttle", "flaky", "dns"]
Effect: TypeAlias = Literal["allow", "reset", "drop", "delay", "throttle", "stall", "dns"]
Transport: TypeAlias = Literal["tcp", "udp"]
FlakyMode: TypeAlias = Literal["fail", "stall"]
ACTION_KINDS: tuple[ActionKind, ...] = (
    "allow", "reset", "drop", "delay", "throttle", "flaky", "dns")

#: Bytes a ``flaky`` ``stall`` flow forwards before it stalls, unless the rule says.
DEFAULT_STALL_AFTER_BYTES = 16384




_PARAMETER_DEFAULTS: dict[str, object] = {
    "rate_kbps": 0.0,
    "ms": 0.0,
    "fail": 0.0,
    "mode": "fail",
    "stall_after_bytes": 0,
    "answer": "",
}


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with a flow: ``kind`` plus the parameters of that kind.

    Parameters of other kinds keep their zero defaults and are left out of
    :meth:`as_json`. ``rate_kbps`` (throttle, > 0): kbit/s (1 kbit = 1000
    bits), each direction on its own. ``ms`` (delay, > 0): added latency.
    ``fail`` (flaky, 0..1): fraction of flows that fail; ``mode`` (flaky): how
    they fail; ``stall_after_bytes`` (flaky, mode ``stall``): bytes forwarded,
    both directions together, before the flow stalls. ``answer`` (dns): the
    IPv4 address a forged DNS answer gives for the query's name.
    """

    kind: ActionKind
    rate_kbps: float = 0.0
    ms: float = 0.0
    fail: float = 0.0
    mode: FlakyMode = "fail"
    stall_after_bytes: int = 0
    answer: str = ""

    def __post_init__(self) -> None:
        kind = self.kind
        if kind not in ACTION_KINDS:
            raise ValueError(f"unknown action kind {kind!r}")
        if kind == "throttle" and not (0 < self.rate_kbps < math.inf):
            raise ValueError("throttle action: rate_kbps must be greater than 0")
        if kind == "delay" and not (0 < self.ms < math.inf):
            raise ValueError("delay action: ms must be greater than 0")
        if kind == "flaky" and not (0 <= self.fail <= 1):
            raise ValueError("flaky action: fail must be within 0..1")
        if kind == "dns":
            ipaddress.IPv4Address(self.answer)  # ValueError if it is not one
        if self.mode not in ("fail", "stall") or self.stall_after_bytes < 0:
            raise ValueError("flaky action: mode is fail or stall, stall_after_bytes >= 0")
        applies = self._parameters()
        for name, default in _PARAMETER_DEFAULTS.items():
            if name not in applies and getattr(self, name) != default:
                raise ValueError(f"{kind} action: {name} does not apply")

    def _parameters(self) -> tuple[str, ...]:
        if self.kind == "throttle":
            return ("rate_kbps",)
        if self.kind == "delay":
            return ("ms",)
        if self.kind == "flaky":
            return (
                ("fail", "mode", "stall_after_bytes") if self.mode == "stall" else ("fail", "mode")
            )
        if self.kind == "dns":
            return ("answer",)
        return ()

    @property
    def blocking(self) -> bool:
        """True for every kind but ``allow``."""
        return self.kind != "allow"

    def as_json(self) -> dict[str, Any]:
        """``{"kind": ..., <the parameters of that kind>}``."""
        out: dict[str, Any] = {"kind": self.kind}
        for name in self._parameters():
            out[name] = getattr(self, name)
        return out


#: The action of "nothing matched".
ALLOW = Action("allow")

_EFFECTS: dict[ActionKind, Effect] = {
    "allow": "allow",
    "reset": "reset",
    "drop": "drop",
    "delay": "delay",
    "throttle": "throttle",
    "dns": "dns",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's verdict on one flow.

    ``rule``: name of the deciding rule, ``None`` for the default allow.
    ``residual``: decided by a live residual entry (the flow was not inspected).
    ``inspected``: the policy looked at the flow and the verdict is based on
    it; false for residual decisions and for a default allow reached only
    because a probability draw skipped the flow. ``fail``: for ``flaky``, this
    flow is one of those that fail. ``skipped``: rules that matched but whose
    probability draw left the flow alone.
    """

    rule: str | None
    action: Action
    residual: bool = False
    inspected: bool = True
    fail: bool = False
    skipped: tuple[str, ...] = ()

    @property
    def effect(self) -> Effect:
        """What the middlebox does: the action kind, with ``flaky`` resolved for this flow.

        ``flaky`` becomes ``allow`` (spared), ``reset`` (mode fail) or
        ``stall`` (mode stall: forward ``action.stall_after_bytes``, then stop).
        """
        effect = _EFFECTS.get(self.action.kind)
        if effect is not None:
            return effect
        if not self.fail:
            return "allow"
        return "stall" if self.action.mode == "stall" else "reset"

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view for the decision log."""
        return {
            "rule": self.rule,
            "action": self.action.as_json(),
            "effect": self.effect,
            "residual": self.residual,
            "inspected": self.inspected,
            "fail": self.fail,
            "skipped": list(self.skipped),
        }
