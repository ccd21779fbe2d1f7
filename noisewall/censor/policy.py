r"""The censor's policy: ordered YAML rules, first match wins (sans-IO).

A policy says what the censor does to each classified flow
(:class:`~noisewall.censor.detection.FlowRecord`). This module is the data
model and the decision logic only: no sockets, no clock reads. The middlebox
calls :meth:`Policy.decide` once per flow, with the time from its
:class:`~noisewall.clock.Clock` and its own :class:`random.Random`, and
enforces :attr:`Decision.effect`. Full reference with examples:
``docs/censor-policy.md``.

Schema
======

.. code-block:: yaml

    description: free text (optional)
    rules:                          # ordered; the first matching, active, inspected rule wins
      - name: fet                   # optional, unique; default "rule-N" (N = position, from 1)
        match:                      # optional; every given condition must hold; {} = every flow
          protocol: [noisesocket, wa]      # label(s) from the classifier, e.g. tls http ssh
                                           #   noisesocket wa fully_encrypted unknown
          sni: "*.whatsapp.net"            # TLS SNI: glob, or "re:<regex>" (re.search),
                                           #   case-insensitive; a list = any of them
          host: "re:(^|\\.)twitter\\.com$" # HTTP Host (port stripped), same syntax as sni
          server: [157.240.0.0/16, 31.13.64.1, "*.example"]   # IP, CIDR, or host-name glob
          port: [443, "5222-5223"]         # int, "lo-hi" range, or a list of them
          ja3: e7d705a3286e19ea42f587b344ee6865   # glob / re: pattern(s), like sni
          ja4: "t13d*"
          fully_encrypted: true            # the GFW fully-encrypted verdict
          # transport: udp                 # tcp | udp (default both); a udp rule matches only
                                           #   server (IPv4/CIDR) and port, and allows or drops
          # query: "*.twitter.com"         # a DNS query's name (in the path), like sni
        action: reset               # allow | reset | drop | delay | throttle | flaky | dns, or:
                                    #   {kind: throttle, rate_kbps: 128}     rate > 0, each way
                                    #   {kind: delay, ms: 300}               added latency > 0
                                    #   {kind: flaky, fail: 0.3}             fail 30% of flows
                                    #   {kind: flaky, fail: 0.5, mode: stall,
                                    #    stall_after_bytes: 4096}            stall 50% of flows
                                    #   {kind: dns, answer: 198.51.100.7}    forge DNS answers
        probability: 0.26           # fraction of matching flows inspected, 0..1 (default 1)
        residual: 180               # seconds; after a hit, block client -> server:port (default 0)
        active:                     # optional list of windows; any one active = rule active
          - {from: 2017-09-20, until: 2017-10-18T00:00:00+08:00}

Semantics
=========

* **Order.** Rules are tried top to bottom; the first rule that is active,
  whose conditions all hold and that inspects the flow decides. Nothing
  matching means ``allow`` (rule ``None``).
* **Globs** use :mod:`fnmatch` syntax over the whole lower-cased name
  (``*`` also crosses dots: ``*.twitter.com`` matches ``a.b.twitter.com``,
  not ``twitter.com``). ``re:`` patterns are Python regexes applied with
  ``re.search`` and ``re.IGNORECASE``: anchor them yourself. A flow with no
  SNI (or no Host, JA3, JA4) never matches a condition on it. A trailing dot
  in SNI / Host is ignored.
* **server** entries are IP addresses, CIDRs (host bits must be zero), or
  host-name globs; a name only matches a flow whose server is a name (SOCKS5
  by domain), an IP or CIDR only a flow whose server is an address.
* **probability.** Like the GFW's fully-encrypted rule, which inspected about
  26% of connections: a matching flow that the draw leaves alone is simply not
  acted on *by that rule*, and evaluation goes on with the next rule (another
  detector may still catch it). Such rules are listed in
  :attr:`Decision.skipped`.
* **residual.** After a rule with ``residual: S`` acts on a flow (for
  ``flaky``: fails it), every new flow with the same client IP, server IP and
  server port gets the same action for ``S`` seconds, without inspection
  (``Decision.residual`` true, ``inspected`` false). Hits during that time do
  not extend it (the GFW's 180 s timer). ``residual`` is an error on an
  ``allow`` rule. Entries live in a :class:`ResidualTable`.
* **active windows** are half-open ``[from, until)``; either end may be left
  out. A date means midnight UTC of that day; a datetime without an offset is
  UTC. Windows are compared with the ``now`` passed to :meth:`Policy.decide`
  (a real or simulated clock).
* **flaky** draws per flow: with probability ``fail`` the flow fails, by
  ``mode``: ``fail`` tears it down like ``reset``; ``stall`` forwards
  ``stall_after_bytes`` (default 16384, both directions counted together)
  and then stops forwarding, like ``drop``.
* Any error in the file raises :class:`PolicyError` with file, line and
  field, e.g. ``policy.yaml:12: rules[1].action.rate_kbps: must be greater
  than 0`` (list indexes in field paths count from 0). Unknown keys and
  duplicate keys are errors.

API
===

``load_policy(path)``, ``parse_policy(text, source)`` and
``policy_from_node(node, source)`` return a :class:`Policy` or raise
:class:`PolicyError`. Per flow: ``policy.residual_decision(flow, now)`` as
soon as the endpoints are known (optional: ``decide`` checks it too), then
``policy.decide(flow, now, rng)`` once the flow is classified. Enforce
``decision.effect`` (``flaky`` is already drawn: do not draw again) and log
``decision.as_json()``.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from noisewall.censor.detection import FlowRecord
from noisewall.yamlspec import (
    Describe,
    LineTracker,
    SpecError,
    SpecPath,
    When,
    compose_spec,
    field_name,
    line_of,
    read_spec_text,
    validation_error,
)

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
    "load_policy",
    "parse_policy",
    "policy_from_node",
]

ActionKind: TypeAlias = Literal["allow", "reset", "drop", "delay", "throttle", "flaky", "dns"]
Effect: TypeAlias = Literal["allow", "reset", "drop", "delay", "throttle", "stall", "dns"]
Transport: TypeAlias = Literal["tcp", "udp"]
FlakyMode: TypeAlias = Literal["fail", "stall"]
ACTION_KINDS: tuple[ActionKind, ...] = (
    "allow", "reset", "drop", "delay", "throttle", "flaky", "dns")
#: What a ``transport: udp`` rule may use: nftables enforces it in the kernel, per packet.
UDP_CONDITIONS = ("transport", "server", "port")
UDP_ACTIONS = ("allow", "drop")
#: Bytes a ``flaky`` ``stall`` flow forwards before it stalls, unless the rule says.
DEFAULT_STALL_AFTER_BYTES = 16384
#: Default bound on live residual entries.
DEFAULT_RESIDUAL_ENTRIES = 65536


# --------------------------------------------------------------------------- errors


class PolicyError(SpecError):
    """An invalid policy: which file, which line (1-based), which field, and what is wrong."""


# --------------------------------------------------------------------------- runtime model


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


_Check: TypeAlias = Callable[[FlowRecord], bool]


_Text: TypeAlias = Callable[[str], object]


def _matcher(patterns: tuple[str, ...]) -> _Text:
    """One precompiled test for glob / ``re:`` patterns over a lower-cased value.

    Exact names go in a set; globs (anchored) and group-free regexes share one
    alternation, so a lookup is one set probe and at most one ``search``.
    """
    exact: set[str] = set()
    parts: list[str] = []
    alone: list[re.Pattern[str]] = []
    for pattern in patterns:
        if pattern.startswith("re:"):
            compiled = re.compile(pattern[3:], re.IGNORECASE)
            if compiled.groups:  # backreferences would shift in a combined pattern
                alone.append(compiled)
            else:
                parts.append(pattern[3:])
        elif any(c in pattern for c in "*?["):
            parts.append(rf"\A{fnmatch.translate(pattern.lower())}")
        else:
            exact.add(pattern.lower())
    if parts:
        try:
            combined = re.compile("|".join(f"(?:{part})" for part in parts), re.IGNORECASE)
        except (re.error, RecursionError, OverflowError, ValueError):  # e.g. inline flags
            alone[:0] = [re.compile(part, re.IGNORECASE) for part in parts]
        else:
            alone.insert(0, combined)
    names = frozenset(exact)
    searches = tuple(compiled.search for compiled in alone)
    if not searches:
        return names.__contains__
    if not names and len(searches) == 1:
        return searches[0]

    def test(value: str) -> bool:
        if value in names:
            return True
        for search in searches:  # noqa: SIM110 - hot path
            if search(value):
                return True
        return False

    return test


@functools.lru_cache(maxsize=65536)
def _ip_value(host: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an IP address text, ``None`` for a host name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def _domain(value: str) -> str:
    return value.lower().rstrip(".")


def _host_header(value: str) -> str:
    """An HTTP Host header value without its port, lower-cased."""
    if value.startswith("["):
        end = value.find("]")
        return _domain(value[1:end] if end > 0 else value)
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return _domain(value)


def _all(checks: list[_Check]) -> _Check:
    """The conjunction of ``checks`` as one call (specialised for short lists)."""
    if not checks:
        return lambda f: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda f: a(f) and b(f)
    if len(checks) == 3:
        a, b, c = checks
        return lambda f: a(f) and b(f) and c(f)
    rest = tuple(checks)

    def test(flow: FlowRecord) -> bool:
        for check in rest:  # noqa: SIM110 - hot path
            if not check(flow):
                return False
        return True

    return test


class Match:
    """A rule's compiled conditions; call it on a flow (or use :attr:`test`)."""

    __slots__ = ("conditions", "spec", "test")

    def __init__(self, spec: _MatchSpec | None = None) -> None:
        spec = spec if spec is not None else _MatchSpec()
        #: The validated conditions (for compiling ``transport: udp`` rules to nftables).
        self.spec = spec
        #: The conditions (normalised), for logs and ``as_json``.
        self.conditions: dict[str, Any] = _describe(spec)
        # Cheapest first: attribute compares, then set probes, then patterns, then addresses.
        checks: list[_Check] = []
        if spec.transport is not None:
            transport = spec.transport
            checks.append(lambda f: f.transport == transport)
        if spec.fully_encrypted is not None:
            checks.append(
                (lambda f: f.fully_encrypted)
                if spec.fully_encrypted
                else (lambda f: not f.fully_encrypted)
            )
        if spec.protocol is not None:
            protocols = frozenset(spec.protocol)
            checks.append(lambda f: f.protocol in protocols)
        if spec.port is not None:
            checks.append(_port_check(spec.port))
        if spec.ja3 is not None:
            ja3 = _matcher(spec.ja3)
            checks.append(lambda f: (v := f.ja3) is not None and bool(ja3(v.lower())))
        if spec.ja4 is not None:
            ja4 = _matcher(spec.ja4)
            checks.append(lambda f: (v := f.ja4) is not None and bool(ja4(v.lower())))
        if spec.sni is not None:
            sni = _matcher(spec.sni)
            checks.append(lambda f: (v := f.sni) is not None and bool(sni(v.lower().rstrip("."))))
        if spec.query is not None:
            query = _matcher(spec.query)
            checks.append(lambda f: (v := f.query) is not None and bool(query(_domain(v))))
        if spec.host is not None:
            host = _matcher(spec.host)
            checks.append(lambda f: (v := f.host) is not None and bool(host(_host_header(v))))
        if spec.server is not None:
            checks.append(_server_check(spec.server))
        #: The compiled test: ``test(flow)`` is true if every condition holds.
        self.test: _Check = _all(checks)

    @classmethod
    def of(cls, **conditions: Any) -> Match:
        """Conditions in code, with the YAML ``match:`` keys and values.

        ``Match.of(sni="*.twitter.com", port=443)``; raises
        :class:`pydantic.ValidationError` (a :class:`ValueError`) if invalid.
        """
        return cls(_MatchSpec.model_validate(conditions))

    def __call__(self, flow: FlowRecord) -> bool:
        """True if every condition holds for ``flow``."""
        return self.test(flow)


def _describe(spec: _MatchSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("protocol", "sni", "host", "query", "server", "ja3", "ja4"):
        value = getattr(spec, name)
        if value is not None:
            out[name] = list(value)
    if spec.port is not None:
        out["port"] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in spec.port]
    if spec.fully_encrypted is not None:
        out["fully_encrypted"] = spec.fully_encrypted
    if spec.transport is not None:
        out["transport"] = spec.transport
    return out


def _port_check(entries: tuple[tuple[int, int], ...]) -> _Check:
    singles = frozenset(lo for lo, hi in entries if lo == hi)
    ranges = tuple((lo, hi) for lo, hi in entries if lo != hi)
    if not ranges:
        return lambda f: f.server.port in singles

    def check(flow: FlowRecord) -> bool:
        port = flow.server.port
        if port in singles:
            return True
        for lo, hi in ranges:  # noqa: SIM110 - hot path
            if lo <= port <= hi:
                return True
        return False

    return check


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _server_check(entries: tuple[str, ...]) -> _Check:
    nets: list[tuple[int, int, int]] = []
    names: list[str] = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry)
        except ValueError:
            names.append(entry)
            continue
        if (
            isinstance(net, ipaddress.IPv6Network)
            and net.subnet_of(_MAPPED)
            and net.prefixlen >= 96
        ):
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        nets.append((net.version, int(net.network_address), int(net.broadcast_address)))
    net_ranges = tuple(nets)
    name_patterns = _matcher(tuple(names)) if names else None

    def check(flow: FlowRecord) -> bool:
        host = flow.server.host
        value = _ip_value(host)
        if value is None:
            return name_patterns is not None and bool(name_patterns(_domain(host)))
        version, number = value
        for net_version, lo, hi in net_ranges:
            if net_version == version and lo <= number <= hi:
                return True
        return False

    return check


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


# --------------------------------------------------------------------------- residual


ResidualKey: TypeAlias = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class ResidualEntry:
    """A live residual block: until when, which rule, which action."""

    expires: float
    rule: str
    action: Action


class ResidualTable:
    """Residual censorship state: (client IP, server IP, server port) -> block until.

    Bounded: when full, expired entries are purged, then the oldest live ones
    are evicted (one eighth of the table at a time).
    """

    def __init__(self, max_entries: int = DEFAULT_RESIDUAL_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a residual table holds at least one entry")
        self.max_entries = max_entries
        self._entries: dict[ResidualKey, ResidualEntry] = {}

    @staticmethod
    def key(flow: FlowRecord) -> ResidualKey:
        """The residual key of a flow."""
        return flow.client.host, flow.server.host, flow.server.port

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: ResidualKey, now: float) -> ResidualEntry | None:
        """The live entry for ``key`` at ``now``, if any (an expired one is removed)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            return None
        return entry

    def add(self, key: ResidualKey, now: float, seconds: float, rule: str, action: Action) -> None:
        """Block ``key`` with ``action`` from ``now`` for ``seconds``."""
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= self.max_entries:
            self.purge(now)
            target = self.max_entries - max(1, self.max_entries // 8)
            while len(entries) > target:
                del entries[next(iter(entries))]
        entries[key] = ResidualEntry(now + seconds, rule, action)

    def purge(self, now: float) -> int:
        """Remove entries expired at ``now``; returns how many."""
        dead = [key for key, entry in self._entries.items() if now >= entry.expires]
        for key in dead:
            del self._entries[key]
        return len(dead)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def snapshot(self) -> dict[ResidualKey, ResidualEntry]:
        """A copy of the entries (live or not yet purged)."""
        return dict(self._entries)


# --------------------------------------------------------------------------- policy


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

# --------------------------------------------------------------------------- schema (pydantic)


def _one_or_many(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be empty")
    if isinstance(value, list):
        if not value:
            raise ValueError("must not be an empty list")
        return tuple(value)
    return (value,)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_LABEL = re.compile(r"[a-z0-9][a-z0-9_.+-]*\Z")


def _label(value: str) -> str:
    label = value.strip().lower()
    if not _LABEL.match(label):
        raise ValueError(f"{value!r} is not a protocol label (e.g. tls, noisesocket, wa)")
    return label


def _pattern(value: str) -> str:
    if value.startswith("re:"):
        body = value[3:]
        if not body:
            raise ValueError("empty regular expression after 're:'")
        try:
            re.compile(body, re.IGNORECASE)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            raise ValueError(f"invalid regular expression {body!r}: {exc.msg}{where}") from None
        except (RecursionError, OverflowError, ValueError) as exc:
            raise ValueError(f"invalid regular expression {body!r}: {exc}") from None
        return value
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


_HOSTNAME = re.compile(r"[a-z0-9*?_\[\]!-]+(\.[a-z0-9*?_\[\]!-]+)*\.?\Z")


def _server(value: str) -> str:
    text = value.strip()
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text))
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"invalid CIDR {text!r}") from None
        raise ValueError(f"invalid CIDR {text!r}: host bits set (did you mean {loose}?)")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower()
    labels = name.rstrip(".").split(".")
    if not _HOSTNAME.match(name) or all(label.isdigit() for label in labels):
        raise ValueError(f"{value!r} is not an IP address, CIDR or host name")
    return name


def _port_number(text: str, original: Any) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid port {original!r}: ports are 1..65535")
    return int(text)


def _port_entry(value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"invalid port {value!r}")
    if isinstance(value, int):
        return (_port_number(str(value), value),) * 2
    if isinstance(value, str):
        lo, sep, hi = value.strip().partition("-")
        first = _port_number(lo.strip(), value)
        last = _port_number(hi.strip(), value) if sep else first
        if last < first:
            raise ValueError(f"invalid port range {value!r}: {first} > {last}")
        return first, last
    raise ValueError(f"invalid port {value!r}: a number or a range like '5222-5223'")


_Str = Annotated[str, Field(min_length=1)]
_Labels = Annotated[
    tuple[Annotated[str, AfterValidator(_label)], ...], BeforeValidator(_one_or_many)
]
_PatternList = Annotated[
    tuple[Annotated[str, AfterValidator(_pattern)], ...], BeforeValidator(_one_or_many)
]
_Servers = Annotated[
    tuple[Annotated[str, AfterValidator(_server)], ...], BeforeValidator(_one_or_many)
]
_Ports = Annotated[
    tuple[Annotated[tuple[int, int], PlainValidator(_port_entry)], ...],
    BeforeValidator(_one_or_many),
]
_Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _MatchSpec(_Spec):
    protocol: _Labels | None = None
    sni: _PatternList | None = None
    host: _PatternList | None = None
    server: _Servers | None = None
    port: _Ports | None = None
    ja3: _PatternList | None = None
    ja4: _PatternList | None = None
    fully_encrypted: bool | None = None
    transport: Transport | None = None
    query: _PatternList | None = None


class _AllowSpec(_Spec):
    kind: Literal["allow"]


class _ResetSpec(_Spec):
    kind: Literal["reset"]


class _DropSpec(_Spec):
    kind: Literal["drop"]


class _DelaySpec(_Spec):
    kind: Literal["delay"]
    ms: _Positive


class _ThrottleSpec(_Spec):
    kind: Literal["throttle"]
    rate_kbps: _Positive


class _FlakySpec(_Spec):
    kind: Literal["flaky"]
    fail: _Fraction
    mode: Literal["fail", "stall"] = "fail"
    stall_after_bytes: Annotated[int, Field(ge=0)] | None = None


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


class _DnsSpec(_Spec):
    kind: Literal["dns"]
    answer: Annotated[str, AfterValidator(_ipv4)]


def _action_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"kind": value.strip()}
    if isinstance(value, dict):
        return value
    raise ValueError(
        f"must be an action name ({', '.join(ACTION_KINDS)}) or a mapping with a 'kind'"
    )


_ActionSpec = Annotated[
    _AllowSpec | _ResetSpec | _DropSpec | _DelaySpec | _ThrottleSpec | _FlakySpec | _DnsSpec,
    Field(discriminator="kind"),
    BeforeValidator(_action_shorthand),
]
_ACTION_SPECS: dict[str, type[_Spec]] = {
    "allow": _AllowSpec,
    "reset": _ResetSpec,
    "drop": _DropSpec,
    "delay": _DelaySpec,
    "throttle": _ThrottleSpec,
    "flaky": _FlakySpec,
    "dns": _DnsSpec,
}


class _WindowSpec(_Spec):
    start: When | None = Field(default=None, alias="from")
    until: When | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _WindowSpec:
        if self.start is None and self.until is None:
            raise ValueError("a window needs 'from', 'until' or both")
        if self.start is not None and self.until is not None and self.start >= self.until:
            raise ValueError("'from' must be before 'until'")
        return self


def _match_mapping(value: Any) -> Any:
    if value is None:
        raise ValueError("must be a mapping (use {} to match every flow)")
    return value


class _RuleSpec(_Spec):
    name: _Str | None = None
    match: Annotated[_MatchSpec, BeforeValidator(_match_mapping)] = _MatchSpec()
    action: _ActionSpec
    probability: _Fraction = 1.0
    residual: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    active: Annotated[tuple[_WindowSpec, ...], BeforeValidator(_one_or_many)] | None = None


class _PolicySpec(_Spec):
    description: str | None = None
    rules: Annotated[tuple[_RuleSpec, ...], BeforeValidator(_as_tuple)]


def _keys(model: type[BaseModel]) -> str:
    return ", ".join(info.alias or name for name, info in model.model_fields.items())


# --------------------------------------------------------------------------- loading

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
    """Build a policy from an already composed YAML node (e.g. inside a scenario file).

    Line numbers in errors are those of the node's document.
    """
    tracker = LineTracker(source, PolicyError, "policy")
    data = tracker.convert(node)
    lines = tracker.lines
    if not isinstance(data, dict):
        raise PolicyError(source, lines[()], None, "a policy is a mapping with a 'rules' list")
    try:
        spec = _PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, lines, source, PolicyError, _describer(data)) from None
    return _compile(spec, lines, source)


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
            and part in _ACTION_SPECS
            and (cur == part or (isinstance(cur, dict) and cur.get("kind") == part))
        ):
            continue  # the discriminated union's tag, not a field
        elif isinstance(part, str):
            exists = False
            display.append(part)
        else:
            exists = False  # an index into a value given as a single item
    return tuple(display), tuple(found)


def _message(error: Mapping[str, Any], display: SpecPath, data: Any) -> tuple[SpecPath, str]:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return display, str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return display, "is required"
    if kind == "extra_forbidden":
        model = _model_at(display[:-1], data)
        allowed = f" (expected one of: {_keys(model)})" if model is not None else ""
        return display, f"unknown key{allowed}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        at_kind = (*display, "kind") if kind == "union_tag_invalid" else display
        node = _value_at(display, data)
        if not isinstance(node, dict):
            at_kind = display
        tag = ctx.get("tag")
        head = f"unknown action {tag!r}" if tag is not None else "needs a 'kind'"
        return at_kind, f"{head} (expected one of: {', '.join(ACTION_KINDS)})"
    messages = {
        "greater_than": "must be greater than {gt}",
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
        "finite_number": "must be a finite number",
        "int_type": "must be an integer",
        "int_from_float": "must be an integer",
        "float_type": "must be a number",
        "string_type": "must be a string",
        "string_too_short": "must not be empty",
        "bool_type": "must be true or false",
        "tuple_type": "must be a list",
        "list_type": "must be a list",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "dict_type": "must be a mapping",
        "literal_error": "must be one of {expected}",
        "datetime_type": "must be an ISO 8601 date or datetime",
    }
    template = messages.get(kind)
    if template is None:
        return display, str(error["msg"])
    try:
        return display, template.format(**{k: _number(v) for k, v in ctx.items()})
    except (KeyError, IndexError):
        return display, str(error["msg"])


def _number(value: Any) -> Any:
    """``0.0`` -> ``0`` in messages."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


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
        return _ACTION_SPECS.get(kind) if isinstance(kind, str) else None
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): _PolicySpec,
        ("rules",): _RuleSpec,
        ("rules", "match"): _MatchSpec,
        ("rules", "active"): _WindowSpec,
    }
    return models.get(names)


def _describer(data: Any) -> Describe:
    """How :func:`validation_error` words a schema error of the policy ``data``."""

    def describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
        display, data_path = _locate(tuple(error["loc"]), data)
        display, message = _message(error, display, data)
        if display[len(data_path) :] == ("kind",):
            data_path = (*data_path, "kind")  # the line of 'kind' itself, when written
        return data_path, display, message

    return describe


def _timestamp(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _action(spec: Any) -> Action:
    if isinstance(spec, _ThrottleSpec):
        return Action("throttle", rate_kbps=spec.rate_kbps)
    if isinstance(spec, _DelaySpec):
        return Action("delay", ms=spec.ms)
    if isinstance(spec, _FlakySpec):
        stall = spec.stall_after_bytes
        if stall is None:
            stall = DEFAULT_STALL_AFTER_BYTES if spec.mode == "stall" else 0
        return Action("flaky", fail=spec.fail, mode=spec.mode, stall_after_bytes=stall)
    if isinstance(spec, _DnsSpec):
        return Action("dns", answer=spec.answer)
    kind: ActionKind = spec.kind
    return Action(kind)


def _compile(spec: _PolicySpec, lines: Mapping[SpecPath, int], source: str) -> Policy:
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, rule in enumerate(spec.rules):
        here: SpecPath = ("rules", index)
        name = rule.name if rule.name is not None else f"rule-{index + 1}"
        if name in seen:
            raise PolicyError(
                source,
                line_of(lines, (*here, "name")),
                field_name((*here, "name")),
                f"duplicate rule name {name!r} (also rules[{seen[name]}])",
            )
        seen[name] = index
        action = rule.action
        stall_bytes = action.stall_after_bytes if isinstance(action, _FlakySpec) else None
        if isinstance(action, _FlakySpec) and stall_bytes is not None and action.mode != "stall":
            at: SpecPath = (*here, "action", "stall_after_bytes")
            raise PolicyError(source, line_of(lines, at), field_name(at), "only with mode: stall")
        if rule.residual > 0 and rule.action.kind == "allow":
            raise PolicyError(
                source,
                line_of(lines, (*here, "residual")),
                field_name((*here, "residual")),
                "residual needs a blocking action, not allow",
            )
        if rule.match.transport == "udp":
            _check_udp_rule(rule, here, lines, source)
        windows = tuple(Window(_timestamp(w.start), _timestamp(w.until)) for w in rule.active or ())
        rules.append(
            Rule(
                name=name,
                match=Match(rule.match),
                action=_action(rule.action),
                probability=rule.probability,
                residual=rule.residual,
                active=windows,
                line=line_of(lines, here),
            )
        )
    return Policy(rules, source=source, description=spec.description)


def _check_udp_rule(rule: _RuleSpec, here: SpecPath, lines: Mapping[SpecPath, int],
                    source: str) -> None:
    """A ``transport: udp`` rule becomes an nftables rule: only what nftables can match and do."""
    def error(at: SpecPath, message: str) -> PolicyError:
        return PolicyError(source, line_of(lines, at), field_name(at), message)

    given = rule.match.model_dump(exclude_none=True)
    for condition in given:
        if condition not in UDP_CONDITIONS:
            raise error((*here, "match", condition),
                        f"not for udp rules (they match {', '.join(UDP_CONDITIONS)})")
    for entry in rule.match.server or ():
        try:
            ipaddress.IPv4Network(entry)
        except ValueError:
            raise error((*here, "match", "server"),
                        f"udp rules match IPv4 addresses or CIDRs, not {entry!r}") from None
    if rule.action.kind not in UDP_ACTIONS:
        raise error((*here, "action"), f"udp rules {' or '.join(UDP_ACTIONS)}")
    for name, default in (("probability", 1.0), ("residual", 0.0), ("active", None)):
        if getattr(rule, name) != default:
            raise error((*here, name), "not for udp rules (enforced in the kernel, per packet)")
