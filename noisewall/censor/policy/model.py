"""The compiled policy: rules with their windows, first match wins, residual blocks first."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.policy.actions import ALLOW, Action, Decision
from noisewall.censor.policy.match import Match
from noisewall.censor.policy.residual import ResidualTable


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time window ``[start, until)`` in POSIX seconds; ``None`` = unbounded."""

    start: float | None
    until: float | None

    def contains(self, now: float) -> bool:
        """True if ``now`` falls inside."""
        if self.start is not None and now < self.start:
            return False
        return self.until is None or now < self.until

    def as_json(self) -> dict[str, str | float | None]:
        """ISO 8601 UTC ends."""
        return {"from": _iso(self.start), "until": _iso(self.until)}


def _iso(ts: float | None) -> str | float | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (ValueError, OverflowError, OSError):
        return ts




@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule. ``line`` is where it starts in its file (``None`` if built in code)."""

    name: str
    match: Match
    action: Action
    probability: float = 1.0
    residual: float = 0.0
    active: tuple[Window, ...] = ()
    line: int | None = None

    def is_active(self, now: float) -> bool:
        """True if the rule has no windows or one of them contains ``now``."""
        if not self.active:
            return True
        return any(window.contains(now) for window in self.active)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "name": self.name,
            "match": self.match.conditions,
            "action": self.action.as_json(),
            "probability": self.probability,
            "residual": self.residual,
            "active": [w.as_json() for w in self.active] or None,
            "line": self.line,
        }






class Policy:
    """Ordered rules plus the residual state they build up.

    ``decide`` uses this policy's own :attr:`residuals` table unless given
    another one (e.g. one shared across policies that replace each other on
    a timeline).
    """

    def __init__(
        self,
        rules: tuple[Rule, ...] | list[Rule] = (),
        *,
        source: str = "<policy>",
        description: str | None = None,
        residuals: ResidualTable | None = None,
    ) -> None:
        self.rules = tuple(rules)
        self.source = source
        self.description = description
        self.residuals = residuals if residuals is not None else ResidualTable()
        inf = math.inf
        # Per rule, what decide() needs, with attribute lookups and the common
        # Decision done once here.
        self._plan = tuple(
            (
                rule,
                rule.match.test,
                tuple(
                    (-inf if w.start is None else w.start, inf if w.until is None else w.until)
                    for w in rule.active
                )
                or None,
                rule.probability,
                rule.action.kind == "flaky",
                Decision(rule.name, rule.action),
            )
            for rule in self.rules
        )

    def __repr__(self) -> str:
        return f"Policy(source={self.source!r}, rules={[r.name for r in self.rules]!r})"

    def residual_decision(
        self, flow: FlowRecord, now: float, residuals: ResidualTable | None = None
    ) -> Decision | None:
        """The residual verdict for a new flow, or ``None`` if its key is not blocked.

        Needs only the flow's endpoints, so a middlebox can ask before it has
        seen any client data (as the GFW blocks residual flows from the SYN);
        :meth:`decide` asks the same question first.
        """
        table = self.residuals if residuals is None else residuals
        entry = table.lookup(ResidualTable.key(flow), now)
        if entry is None:
            return None
        return Decision(
            entry.rule,
            entry.action,
            residual=True,
            inspected=False,
            fail=entry.action.kind == "flaky",
        )

    def decide(
        self,
        flow: FlowRecord,
        now: float,
        rng: random.Random,
        residuals: ResidualTable | None = None,
    ) -> Decision:
        """The verdict on ``flow`` at time ``now`` (POSIX seconds, from the censor's clock).

        Order: a live residual entry for the flow's (client, server, port)
        wins without inspection; otherwise the first active rule whose
        conditions hold and whose probability draw inspects the flow; else
        allow. ``rng`` is drawn once per matching rule with probability < 1
        and once per ``flaky`` decision, nothing else.
        """
        table = self.residuals if residuals is None else residuals
        if table._entries:
            residual = self.residual_decision(flow, now, table)
            if residual is not None:
                return residual
        skipped: tuple[str, ...] = ()
        for rule, test, windows, probability, flaky, decision in self._plan:
            if windows is not None:
                for start, until in windows:
                    if start <= now < until:
                        break
                else:
                    continue
            if not test(flow):
                continue
            if probability < 1.0 and rng.random() >= probability:
                skipped += (rule.name,)
                continue
            fail = False
            if flaky:
                fail = rng.random() < rule.action.fail
            if rule.residual > 0 and (fail or not flaky):
                table.add(ResidualTable.key(flow), now, rule.residual, rule.name, rule.action)
            if fail or skipped:
                return Decision(rule.name, rule.action, fail=fail, skipped=skipped)
            return decision
        if skipped:
            return Decision(None, ALLOW, inspected=False, skipped=skipped)
        return _DEFAULT

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view of the rules."""
        return {
            "source": self.source,
            "description": self.description,
            "rules": [rule.as_json() for rule in self.rules],
        }


_DEFAULT = Decision(None, ALLOW)
