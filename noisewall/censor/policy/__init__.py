"""The censor's policy: ordered YAML rules, first match wins (sans-IO).

A policy says what the censor does to each classified flow
(:class:`~noisewall.censor.flowrecord.FlowRecord`): data model and decision
logic only, no sockets and no clock reads. The middlebox calls
:meth:`Policy.decide` once per flow with the time from its clock and its own
random generator, and enforces :attr:`Decision.effect`. The policy language,
with examples: ``docs/censor-policy.md``.

* :mod:`.actions`: actions and decisions;
* :mod:`.match`: a rule's conditions compiled to one test;
* :mod:`.residual`: residual blocks after a hit;
* :mod:`.model`: rules, windows and the policy's decision;
* :mod:`.schema` and :mod:`.loading`: the file's schema, its errors, compilation.
"""

from noisewall.censor.policy.actions import ALLOW, Action, ActionKind, Decision, Effect
from noisewall.censor.policy.loading import (
    PolicyError,
    compile_policy,
    load_policy,
    parse_policy,
    policy_from_node,
)
from noisewall.censor.policy.match import Match
from noisewall.censor.policy.model import Policy, Rule, Window
from noisewall.censor.policy.residual import ResidualEntry, ResidualKey, ResidualTable

__all__ = [
    "ALLOW",
    "Action",
    "ActionKind",
    "Decision",
    "Effect",
    "Match",
    "Policy",
    "PolicyError",
    "ResidualEntry",
    "ResidualKey",
    "ResidualTable",
    "Rule",
    "Window",
    "compile_policy",
    "load_policy",
    "parse_policy",
    "policy_from_node",
]
