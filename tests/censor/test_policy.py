"""The censor policy: YAML schema, errors with file:line:field, and decisions."""

from __future__ import annotations

import json
import math
import random
import re
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.bench.censor import DECISION_POLICY, _unmatched_flows
from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.policy import (
    ALLOW,
    Action,
    Decision,
    Match,
    Policy,
    PolicyError,
    ResidualTable,
    load_policy,
    parse_policy,
    policy_from_node,
)
from noisewall.clock import ManualClock
from noisewall.records.endpoint import Endpoint

DOCS = Path(__file__).resolve().parents[2] / "docs" / "censor-policy.md"
T0 = datetime(2017, 9, 20, tzinfo=UTC).timestamp()


def flow(
    client: str = "192.0.2.10",
    server: str = "203.0.113.5",
    port: int = 443,
    client_port: int = 40000,
    **fields: object,
) -> FlowRecord:
    return FlowRecord(Endpoint(client, client_port), Endpoint(server, port), **fields)  # type: ignore[arg-type]


def parse(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text), "policy.yaml")


def error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse(text)
    return info.value


def decide(policy: Policy, record: FlowRecord, now: float = T0, seed: int = 0) -> Decision:
    return policy.decide(record, now, random.Random(seed))


# --------------------------------------------------------------------------- valid policies


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("allow", Action("allow")),
        ("reset", Action("reset")),
        ("drop", Action("drop")),
        ("{kind: drop}", Action("drop")),
        ("{kind: delay, ms: 250}", Action("delay", ms=250.0)),
        ("{kind: throttle, rate_kbps: 128}", Action("throttle", rate_kbps=128.0)),
        ("{kind: throttle, rate_kbps: 0.5}", Action("throttle", rate_kbps=0.5)),
        ("{kind: flaky, fail: 0.3}", Action("flaky", fail=0.3, mode="fail")),
        (
            "{kind: flaky, fail: 1, mode: stall}",
            Action("flaky", fail=1.0, mode="stall", stall_after_bytes=16384),
        ),
        (
            "{kind: flaky, fail: 0, mode: stall, stall_after_bytes: 10}",
            Action("flaky", fail=0.0, mode="stall", stall_after_bytes=10),
        ),
    ],
)
def test_every_action_parses(text: str, expected: Action) -> None:
    policy = parse(f"rules:\n  - action: {text}\n")
    assert policy.rules[0].action == expected


def test_defaults_and_modifiers() -> None:
    policy = parse(
        """\
        description: test
        rules:
          - action: reset
          - name: fet
            match: {fully_encrypted: true}
            action: drop
            probability: 0.26
            residual: 180
            active:
              - {from: 2017-09-20, until: 2017-10-18T00:00:00+08:00}
              - from: 2018-01-01 12:00:00
          - name: single-window
            action: drop
            active: {until: "2017-09-20T08:00:00Z"}
        """
    )
    first, fet, single = policy.rules
    assert policy.description == "test"
    assert (first.name, first.probability, first.residual, first.active) == ("rule-1", 1.0, 0.0, ())
    assert first.line == 3
    assert (fet.name, fet.probability, fet.residual, fet.line) == ("fet", 0.26, 180.0, 4)
    assert fet.active[0].start == T0
    assert fet.active[0].until == datetime(2017, 10, 17, 16, tzinfo=UTC).timestamp()
    assert fet.active[1].start == datetime(2018, 1, 1, 12, tzinfo=UTC).timestamp()
    assert fet.active[1].until is None
    assert single.active[0].start is None
    assert single.active[0].until == T0 + 8 * 3600
    json.dumps(policy.as_json())


def test_match_forms_parse() -> None:
    policy = parse(
        """\
        rules:
          - match:
              protocol: [TLS, noisesocket]
              sni: ["*.whatsapp.net", "re:^mmg\\\\d+\\\\.", exact.example]
              host: forbidden.example
              server: [10.0.0.0/8, 192.0.2.1, "2001:db8::/32", "*.whatsapp.net"]
              port: [443, "5222-5223", "8080"]
              ja3: e7d705a3286e19ea42f587b344ee6865
              ja4: ["t13d*", "re:^q"]
              fully_encrypted: false
            action: reset
        """
    )
    conditions = policy.rules[0].match.conditions
    assert conditions["protocol"] == ["tls", "noisesocket"]
    assert conditions["port"] == [443, "5222-5223", 8080]
    assert conditions["server"][1] == "192.0.2.1"
    assert conditions["fully_encrypted"] is False


def test_anchors_and_merge_keys_work() -> None:
    policy = parse(
        """\
        rules:
          - name: a
            match: &wa {protocol: wa, port: 5222}
            action: drop
          - name: b
            match:
              <<: *wa
              fully_encrypted: true
            action: reset
        """
    )
    assert policy.rules[1].match.conditions == {
        "protocol": ["wa"],
        "port": [5222],
        "fully_encrypted": True,
    }


def test_empty_rule_list_allows_everything() -> None:
    policy = parse("rules: []\n")
    decision = decide(policy, flow())
    assert decision == Decision(None, ALLOW)
    assert decision.effect == "allow"


# --------------------------------------------------------------------------- invalid policies

INVALID = [
    # (name, text, line, field, message)
    (
        "bad action name",
        "rules:\n  - action: block\n",
        2,
        "rules[0].action",
        "unknown action 'block' (expected one of: allow, reset, drop, delay, throttle, flaky, dns)",
    ),
    (
        "bad action kind in mapping",
        "rules:\n  - action:\n      kind: block\n",
        3,
        "rules[0].action.kind",
        "unknown action 'block' (expected one of: allow, reset, drop, delay, throttle, flaky, dns)",
    ),
    (
        "action without kind",
        "rules:\n  - action: {rate_kbps: 5}\n",
        2,
        "rules[0].action",
        "needs a 'kind' (expected one of: allow, reset, drop, delay, throttle, flaky, dns)",
    ),
    (
        "action of the wrong type",
        "rules:\n  - action: 5\n",
        2,
        "rules[0].action",
        "must be an action name (allow, reset, drop, delay, throttle, flaky, dns) "
        "or a mapping with a 'kind'",
    ),
    ("missing action", "rules:\n  - name: x\n", 2, "rules[0].action", "is required"),
    (
        "negative rate",
        "rules:\n  - action: reset\n  - action:\n      kind: throttle\n      rate_kbps: -5\n",
        5,
        "rules[1].action.rate_kbps",
        "must be greater than 0",
    ),
    (
        "zero rate",
        "rules:\n  - action: {kind: throttle, rate_kbps: 0}\n",
        2,
        "rules[0].action.rate_kbps",
        "must be greater than 0",
    ),
    (
        "throttle without rate",
        "rules:\n  - action: throttle\n",
        2,
        "rules[0].action.rate_kbps",
        "is required",
    ),
    (
        "rate not a number",
        "rules:\n  - action: {kind: throttle, rate_kbps: fast}\n",
        2,
        "rules[0].action.rate_kbps",
        "must be a number",
    ),
    (
        "delay of zero",
        "rules:\n  - action: {kind: delay, ms: 0}\n",
        2,
        "rules[0].action.ms",
        "must be greater than 0",
    ),
    (
        "delay of NaN",
        "rules:\n  - action: {kind: delay, ms: .nan}\n",
        2,
        "rules[0].action.ms",
        "must be a finite number",
    ),
    (
        "fail above 1",
        "rules:\n  - action:\n      kind: flaky\n      fail: 1.5\n",
        4,
        "rules[0].action.fail",
        "must be at most 1",
    ),
    (
        "bad flaky mode",
        "rules:\n  - action: {kind: flaky, fail: 0.5, mode: sometimes}\n",
        2,
        "rules[0].action.mode",
        "unknown value 'sometimes' (expected 'fail' or 'stall')",
    ),
    (
        "stall bytes without stall mode",
        "rules:\n  - action:\n      kind: flaky\n      fail: 0.5\n      stall_after_bytes: 10\n",
        5,
        "rules[0].action.stall_after_bytes",
        "only with mode: stall",
    ),
    (
        "parameter of another action",
        "rules:\n  - action:\n      kind: reset\n      ms: 5\n",
        4,
        "rules[0].action.ms",
        "unknown key (expected one of: kind)",
    ),
    (
        "unknown key in a rule",
        "rules:\n  - action: reset\n    probabilty: 0.5\n",
        3,
        "rules[0].probabilty",
        "unknown key (expected one of: name, match, action, probability, residual, active)",
    ),
    (
        "unknown key in match",
        "rules:\n  - action: reset\n    match:\n      sniff: x\n",
        4,
        "rules[0].match.sniff",
        "unknown key (expected one of: protocol, sni, host, server, port, ja3, ja4, "
        "fully_encrypted, transport, query)",
    ),
    (
        "unknown top-level key",
        "rules: []\nrule: []\n",
        2,
        "rule",
        "unknown key (expected one of: description, rules)",
    ),
    (
        "unknown key in a window",
        "rules:\n  - action: drop\n    active:\n      - {from: 2017-01-01, to: 2017-02-01}\n",
        4,
        "rules[0].active[0].to",
        "unknown key (expected one of: from, until)",
    ),
    (
        "bad regex",
        "rules:\n  - action: reset\n    match:\n      sni: [a.example, 're:(foo']\n",
        4,
        "rules[0].match.sni[1]",
        "invalid regular expression '(foo': missing ), unterminated subpattern at position 0",
    ),
    (
        "empty regex",
        "rules:\n  - action: reset\n    match: {host: 're:'}\n",
        3,
        "rules[0].match.host",
        "empty regular expression after 're:'",
    ),
    (
        "bad CIDR prefix",
        "rules:\n  - action: drop\n    match:\n      server:\n        - 10.0.0.0/8\n"
        "        - 10.0.0.0/33\n",
        6,
        "rules[0].match.server[1]",
        "invalid CIDR '10.0.0.0/33'",
    ),
    (
        "CIDR with host bits",
        "rules:\n  - action: drop\n    match: {server: 10.1.2.3/8}\n",
        3,
        "rules[0].match.server",
        "invalid CIDR '10.1.2.3/8': host bits set (did you mean 10.0.0.0/8?)",
    ),
    (
        "bad IPv4 address",
        "rules:\n  - action: drop\n    match: {server: 300.1.1.1}\n",
        3,
        "rules[0].match.server",
        "'300.1.1.1' is not an IP address, CIDR or host name",
    ),
    (
        "port out of range",
        "rules:\n  - action: drop\n    match: {port: 70000}\n",
        3,
        "rules[0].match.port",
        "invalid port 70000: ports are 1..65535",
    ),
    (
        "inverted port range",
        "rules:\n  - action: drop\n    match:\n      port: [1, '9-3']\n",
        4,
        "rules[0].match.port[1]",
        "invalid port range '9-3': 9 > 3",
    ),
    (
        "boolean port",
        "rules:\n  - action: drop\n    match: {port: true}\n",
        3,
        "rules[0].match.port",
        "invalid port True",
    ),
    (
        "window date not ISO 8601",
        "rules:\n  - action: drop\n    active:\n      - from: 2017-01-01\n"
        "        until: next tuesday\n",
        5,
        "rules[0].active[0].until",
        "'next tuesday' is not an ISO 8601 date or datetime",
    ),
    (
        "window date impossible",
        "rules:\n  - action: drop\n    active:\n      - from: 2017-02-30\n",
        4,
        "rules[0].active[0].from",
        "invalid value '2017-02-30': day is out of range for month",
    ),
    (
        "window backwards",
        "rules:\n  - action: drop\n    active:\n      - {from: 2018-01-01, until: 2017-01-01}\n",
        4,
        "rules[0].active[0]",
        "'from' must be before 'until'",
    ),
    (
        "empty window",
        "rules:\n  - action: drop\n    active:\n      - {}\n",
        4,
        "rules[0].active[0]",
        "a window needs 'from', 'until' or both",
    ),
    (
        "probability above 1",
        "rules:\n  - action: drop\n    probability: 1.01\n",
        3,
        "rules[0].probability",
        "must be at most 1",
    ),
    (
        "probability as a word",
        "rules:\n  - action: drop\n    probability: yes\n",
        3,
        "rules[0].probability",
        "must be a number",
    ),
    (
        "negative residual",
        "rules:\n  - action: drop\n    residual: -1\n",
        3,
        "rules[0].residual",
        "must be at least 0",
    ),
    (
        "residual on allow",
        "rules:\n  - action: allow\n    residual: 30\n",
        3,
        "rules[0].residual",
        "residual needs a blocking action, not allow",
    ),
    (
        "duplicate rule names",
        "rules:\n  - {name: a, action: drop}\n  - action: reset\n    name: a\n",
        4,
        "rules[1].name",
        "duplicate rule name 'a' (also rules[0])",
    ),
    (
        "duplicate key",
        "rules:\n  - action: drop\n    action: reset\n",
        3,
        "rules[0].action",
        "duplicate key",
    ),
    (
        "bad protocol label",
        "rules:\n  - action: drop\n    match: {protocol: 'no such'}\n",
        3,
        "rules[0].match.protocol",
        "'no such' is not a protocol label (e.g. tls, noisesocket, wa)",
    ),
    (
        "empty condition list",
        "rules:\n  - action: drop\n    match: {sni: []}\n",
        3,
        "rules[0].match.sni",
        "must not be an empty list",
    ),
    (
        "null match",
        "rules:\n  - action: drop\n    match:\n",
        3,
        "rules[0].match",
        "must be a mapping (use {} to match every flow)",
    ),
    ("rules not a list", "rules: drop\n", 1, "rules", "must be a list"),
    ("missing rules", "description: x\n", 1, "rules", "is required"),
    (
        "non-string key",
        "rules:\n  - action: drop\n    1: x\n",
        3,
        "rules[0]",
        "keys must be strings",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_policy_names_file_line_field(
    text: str, line: int, field: str, message: str
) -> None:
    exc = error(text)
    assert (exc.file, exc.line, exc.field, exc.message) == ("policy.yaml", line, field, message)
    assert str(exc) == f"policy.yaml:{line}: {field}: {message}"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", 1, "empty policy: expected a mapping with a 'rules' list"),
        ("- a\n- b\n", 1, "a policy is a mapping with a 'rules' list"),
        (
            "rules:\n  - action: reset\n   match: [\n",
            3,
            "invalid YAML: while parsing a block collection: "
            "expected <block end>, but found '<block mapping start>'",
        ),
        (
            "rules:\n\t- action: drop\n",
            2,
            "invalid YAML: while scanning for the next token: "
            "found character '\\t' that cannot start any token",
        ),
        ("rules: []\n---\nrules: []\n", 2, None),
        ("rules: [\n\n", 3, None),
        ("rules: []\nx: \x00\n", 2, "invalid YAML: special characters are not allowed"),
    ],
)
def test_yaml_errors_give_file_and_line(text: str, line: int, message: str | None) -> None:
    exc = error(text)
    assert (exc.file, exc.line, exc.field) == ("policy.yaml", line, None)
    if message is not None:
        assert exc.message == message
    assert str(exc).startswith(f"policy.yaml:{line}: ")


def test_python_tags_are_refused() -> None:
    exc = error("rules: !!python/object/apply:os.system [echo]\n")
    assert (exc.line, exc.field) == (1, "rules")
    assert exc.message.startswith("unsupported YAML tag")
    exc = error("rules:\n  - action: !!python/name:os.system reset\n")
    assert (exc.line, exc.field) == (2, "rules[0].action")


def test_recursive_alias_is_an_error() -> None:
    exc = error("rules: &r [*r]\n")
    assert exc.line == 1
    assert exc.message == "recursive alias"


def test_deep_nesting_is_an_error() -> None:
    exc = error("rules: " + "[" * 5000 + "]" * 5000 + "\n")
    assert exc.line == 1


def test_first_error_by_line_is_reported() -> None:
    exc = error(
        "rules:\n  - action: {kind: throttle, rate_kbps: -1}\n  - action: block\n"
        "    probability: 2\n"
    )
    assert exc.line == 2


def test_load_policy_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gfw.yaml"
    path.write_text("rules:\n  - action: reset\n  - action: {kind: throttle, rate_kbps: -1}\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:3: rules[1].action.rate_kbps: must be greater than 0"
    path.write_text("rules:\n  - {name: ok, action: reset}\n")
    assert [rule.name for rule in load_policy(path).rules] == ["ok"]
    assert load_policy(str(path)).source == str(path)


def test_load_policy_unreadable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.file == str(missing)
    assert info.value.line is None
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"rules: \xff\xfe\n")
    with pytest.raises(PolicyError, match="not UTF-8"):
        load_policy(binary)


def test_policy_from_node_keeps_document_lines() -> None:
    scenario = (
        "name: whatsapp-2017\nsteps: 3\npolicy:\n  rules:\n    - action: {kind: delay, ms: -1}\n"
    )
    root = yaml.compose(scenario, Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)
    node = next(value for key, value in root.value if key.value == "policy")
    with pytest.raises(PolicyError) as info:
        policy_from_node(node, "scenario.yaml")
    assert str(info.value) == "scenario.yaml:5: rules[0].action.ms: must be greater than 0"


# --------------------------------------------------------------------------- matching


def test_first_match_wins_in_order() -> None:
    policy = parse(
        """\
        rules:
          - {name: chat-443, match: {protocol: noisesocket, port: 443}, action: reset}
          - {name: chat, match: {protocol: noisesocket}, action: drop}
          - {name: everything, action: {kind: delay, ms: 10}}
        """
    )
    assert decide(policy, flow(protocol="noisesocket", port=443)).rule == "chat-443"
    assert decide(policy, flow(protocol="noisesocket", port=5222)).rule == "chat"
    assert decide(policy, flow(protocol="tls")).rule == "everything"
    decision = decide(policy, flow(protocol="tls"))
    assert (decision.action, decision.effect, decision.inspected) == (
        Action("delay", ms=10.0),
        "delay",
        True,
    )


def test_sni_glob_versus_regex() -> None:
    policy = parse(
        """\
        rules:
          - name: glob
            match: {sni: "*.twitter.com"}
            action: reset
          - name: exact
            match: {sni: twitter.com}
            action: drop
          - name: regex
            match: {sni: "re:t\\\\.co"}
            action: {kind: throttle, rate_kbps: 130}
        """
    )
    cases = {
        "api.twitter.com": "glob",
        "a.b.TWITTER.com.": "glob",
        "Twitter.COM": "exact",
        "nottwitter.com": None,
        "t.co": "regex",
        "reddit.com": "regex",  # the 2021 substring rule: "t.co" inside "reddit.com"
        "microsoft.com": "regex",
        "tXco.example": None,
        "twitter.com.evil": None,
    }
    for sni, rule in cases.items():
        assert decide(policy, flow(protocol="tls", sni=sni)).rule == rule, sni
    assert decide(policy, flow(protocol="tls")).rule is None  # no SNI, no SNI rule


def test_regex_is_searched_and_anchorable() -> None:
    policy = parse(
        """\
        rules:
          - match: {sni: "re:^mmg[0-9]+\\\\.whatsapp\\\\.net$"}
            action: reset
        """
    )
    assert decide(policy, flow(sni="mmg12.whatsapp.net")).rule == "rule-1"
    assert decide(policy, flow(sni="xmmg12.whatsapp.net")).rule is None
    assert decide(policy, flow(sni="mmg12.whatsapp.net.evil")).rule is None


def test_regex_with_groups_and_inline_flags() -> None:
    match = Match.of(sni=["re:^(a)\\1\\.example$", "re:(?i)^X\\.", "*.glob"])
    assert match(flow(sni="aa.example"))
    assert not match(flow(sni="ab.example"))
    assert match(flow(sni="x.anything"))
    assert match(flow(sni="a.glob"))


def test_http_host_without_port() -> None:
    policy = parse(
        """\
        rules:
          - match: {protocol: http, host: "re:(^|\\\\.)forbidden\\\\.example$"}
            action: reset
        """
    )
    for host in ("forbidden.example", "www.forbidden.example:8080", "FORBIDDEN.EXAMPLE."):
        assert decide(policy, flow(protocol="http", host=host)).rule == "rule-1", host
    assert decide(policy, flow(protocol="http", host="forbidden.example.org")).rule is None
    assert decide(policy, flow(protocol="tls", sni="forbidden.example")).rule is None


def test_cidr_and_port_range() -> None:
    policy = parse(
        """\
        rules:
          - name: ranges
            match:
              server: [203.0.113.0/24, 198.51.100.7, "2001:db8::/32"]
              port: [443, "5222-5223"]
            action: drop
          - name: by-name
            match: {server: "*.whatsapp.net"}
            action: reset
        """
    )
    hits = [
        ("203.0.113.1", 443),
        ("203.0.113.255", 5222),
        ("198.51.100.7", 5223),
        ("2001:db8::1", 443),
        ("[2001:db8:ffff::9]", 443),
        ("::ffff:203.0.113.9", 443),
    ]
    for server, port in hits:
        assert decide(policy, flow(server=server, port=port)).rule == "ranges", (server, port)
    misses = [
        ("203.0.114.1", 443),
        ("198.51.100.8", 443),
        ("203.0.113.1", 5224),
        ("203.0.113.1", 80),
        ("2001:db9::1", 443),
    ]
    for server, port in misses:
        assert decide(policy, flow(server=server, port=port)).rule is None, (server, port)
    mapped = parse("rules:\n  - {match: {server: '::ffff:203.0.113.0/120'}, action: drop}\n")
    assert decide(mapped, flow(server="203.0.113.77")).effect == "drop"
    assert decide(mapped, flow(server="::ffff:203.0.113.78")).effect == "drop"
    assert decide(mapped, flow(server="203.0.114.1")).effect == "allow"
    assert decide(policy, flow(server="e1.whatsapp.net")).rule == "by-name"
    assert decide(policy, flow(server="E1.WhatsApp.NET.")).rule == "by-name"
    assert decide(policy, flow(server="whatsapp.net.evil")).rule is None


def test_fingerprints_protocols_and_fully_encrypted() -> None:
    policy = parse(
        """\
        rules:
          - name: ja3
            match: {ja3: E7D705A3286E19EA42F587B344EE6865}
            action: reset
          - name: ja4
            match: {ja4: ["t13d1516h2_*", "re:^q13"]}
            action: drop
          - name: fet
            match: {fully_encrypted: true, protocol: [fully_encrypted, unknown]}
            action: drop
          - name: plain
            match: {fully_encrypted: false, protocol: ssh}
            action: {kind: delay, ms: 5}
        """
    )
    assert decide(policy, flow(ja3="e7d705a3286e19ea42f587b344ee6865")).rule == "ja3"
    assert decide(policy, flow(ja4="t13d1516h2_8daaf6152771_b186095e22b6")).rule == "ja4"
    assert decide(policy, flow(ja4="q13d0310h3_55b375c5d22e_cd85d2d88918")).rule == "ja4"
    assert decide(policy, flow(ja4="t12d1516h2_8daaf6152771_b186095e22b6")).rule is None
    assert decide(policy, flow(protocol="unknown", fully_encrypted=True)).rule == "fet"
    assert decide(policy, flow(protocol="tls", fully_encrypted=True)).rule is None
    assert decide(policy, flow(protocol="ssh")).rule == "plain"
    assert decide(policy, flow(protocol="ssh", fully_encrypted=True)).rule is None


def test_empty_match_matches_everything() -> None:
    policy = parse("rules:\n  - {match: {}, action: drop}\n")
    assert decide(policy, flow()).effect == "drop"


# --------------------------------------------------------------------------- probability


def test_probability_inspects_about_p_and_falls_through() -> None:
    policy = parse(
        """\
        rules:
          - name: fet
            match: {fully_encrypted: true}
            action: drop
            probability: 0.26
          - name: fallback
            match: {port: 443}
            action: {kind: delay, ms: 1}
        """
    )
    rng = random.Random(2017)
    n = 20_000
    decisions = [policy.decide(flow(fully_encrypted=True), T0, rng) for _ in range(n)]
    hits = sum(d.rule == "fet" for d in decisions)
    sigma = math.sqrt(n * 0.26 * 0.74)
    assert abs(hits - 0.26 * n) < 5 * sigma
    for d in decisions:
        if d.rule == "fet":
            assert (d.inspected, d.skipped, d.effect) == (True, (), "drop")
        else:  # not inspected by "fet": the next rule decides
            assert (d.rule, d.skipped, d.effect) == ("fallback", ("fet",), "delay")
    # A skipped flow that no later rule matches is allowed, and marked not inspected.
    skipped = [policy.decide(flow(fully_encrypted=True, port=22), T0, rng) for _ in range(200)]
    allowed = [d for d in skipped if d.rule is None]
    assert allowed
    assert all(d == Decision(None, ALLOW, inspected=False, skipped=("fet",)) for d in allowed)


def test_probability_zero_and_one() -> None:
    policy = parse(
        "rules:\n  - {name: never, action: drop, probability: 0}\n"
        "  - {name: always, action: reset, probability: 1}\n"
    )
    rng = random.Random(5)
    state = rng.getstate()
    for _ in range(100):
        decision = policy.decide(flow(), T0, rng)
        assert (decision.rule, decision.skipped) == ("always", ("never",))
    # p = 1 draws nothing; p = 0 draws one number per flow.
    replay = random.Random()
    replay.setstate(state)
    for _ in range(100):
        replay.random()
    assert replay.getstate() == rng.getstate()


def test_decisions_are_deterministic_for_a_seed() -> None:
    policy = parse("rules:\n  - {action: {kind: flaky, fail: 0.4}, probability: 0.5}\n")
    flows = [flow(client_port=p) for p in range(500)]
    first = [policy.decide(f, T0, random.Random(9)).as_json() for f in flows]
    again = [policy.decide(f, T0, random.Random(9)).as_json() for f in flows]
    assert first == again


# --------------------------------------------------------------------------- flaky


def test_flaky_fails_a_fraction() -> None:
    policy = parse("rules:\n  - {name: flap, action: {kind: flaky, fail: 0.3}}\n")
    rng = random.Random(1)
    n = 10_000
    decisions = [policy.decide(flow(), T0, rng) for _ in range(n)]
    failed = [d for d in decisions if d.fail]
    assert abs(len(failed) - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)
    assert {d.effect for d in failed} == {"reset"}
    assert {d.effect for d in decisions if not d.fail} == {"allow"}
    assert all(d.rule == "flap" and d.inspected for d in decisions)


def test_flaky_stall_mode() -> None:
    policy = parse(
        "rules:\n  - action: {kind: flaky, fail: 1, mode: stall, stall_after_bytes: 4096}\n"
    )
    decision = decide(policy, flow())
    assert (decision.effect, decision.fail, decision.action.stall_after_bytes) == (
        "stall",
        True,
        4096,
    )
    assert decision.as_json()["action"] == {
        "kind": "flaky",
        "fail": 1.0,
        "mode": "stall",
        "stall_after_bytes": 4096,
    }


# --------------------------------------------------------------------------- residual


def test_residual_blocks_within_the_window_and_not_after() -> None:
    clock = ManualClock(T0)
    policy = parse(
        """\
        rules:
          - name: fet
            match: {fully_encrypted: true}
            action: drop
            residual: 180
        """
    )
    rng = random.Random(0)
    hit = policy.decide(flow(fully_encrypted=True, port=8388), clock.now(), rng)
    assert (hit.rule, hit.residual, hit.inspected, hit.effect) == ("fet", False, True, "drop")

    clock.advance(179.9)  # an innocent-looking flow, same client -> server:port
    early = policy.residual_decision(flow(port=8388), clock.now())  # before any client data
    assert early == Decision("fet", Action("drop"), residual=True, inspected=False)
    again = policy.decide(flow(port=8388, client_port=50000), clock.now(), rng)
    assert again == Decision("fet", Action("drop"), residual=True, inspected=False)
    # Other ports of the server, and other clients, are not affected.
    assert policy.decide(flow(port=8389), clock.now(), rng).rule is None
    assert policy.decide(flow(client="192.0.2.99", port=8388), clock.now(), rng).rule is None

    clock.advance(0.1)  # 180 s after the hit: free again (residual hits did not extend it)
    assert policy.decide(flow(port=8388), clock.now(), rng) == Decision(None, ALLOW)
    assert len(policy.residuals) == 0


def test_residual_keeps_the_rule_action_and_can_be_shared() -> None:
    shared = ResidualTable()
    first = parse("rules:\n  - {name: sni, match: {sni: x.example}, action: reset, residual: 90}\n")
    second = parse("rules: []\n")
    first.decide(flow(sni="x.example"), T0, random.Random(0), residuals=shared)
    assert len(first.residuals) == 0
    decision = second.decide(flow(), T0 + 10, random.Random(0), residuals=shared)
    assert (decision.rule, decision.effect, decision.residual) == ("sni", "reset", True)
    assert second.decide(flow(), T0 + 10, random.Random(0)).rule is None


def test_residual_only_after_a_flaky_failure() -> None:
    policy = parse("rules:\n  - {name: f, action: {kind: flaky, fail: 0.5}, residual: 60}\n")
    rng = random.Random(3)
    for port in range(1, 200):
        decision = policy.decide(flow(port=port), T0, rng)
        assert (ResidualTable.key(flow(port=port)) in policy.residuals.snapshot()) == decision.fail
        if decision.fail:
            later = policy.decide(flow(port=port), T0 + 1, rng)
            assert (later.residual, later.fail, later.effect) == (True, True, "reset")


def test_probability_skips_do_not_create_residuals() -> None:
    policy = parse("rules:\n  - {action: drop, probability: 0, residual: 180}\n")
    policy.decide(flow(), T0, random.Random(0))
    assert len(policy.residuals) == 0


def test_residual_table_is_bounded() -> None:
    table = ResidualTable(max_entries=16)
    for i in range(10):
        table.add(("c", "s", i), 0.0, 1.0, "r", Action("drop"))
    table.add(("c", "s", 100), 5.0, 100.0, "r", Action("drop"))
    for i in range(1000):
        table.add(("c", "s", 1000 + i), 5.0, 100.0, "r", Action("drop"))
        assert len(table) <= 16
    # The newest entries survive; expired ones went first.
    assert table.lookup(("c", "s", 1999), 6.0) is not None
    assert table.lookup(("c", "s", 0), 6.0) is None
    assert table.purge(1000.0) == len(table.snapshot()) or len(table) == 0
    assert len(table) == 0
    with pytest.raises(ValueError):
        ResidualTable(max_entries=0)


# --------------------------------------------------------------------------- active windows


def test_active_windows_follow_the_clock() -> None:
    clock = ManualClock(datetime(2017, 9, 19, 23, 59, tzinfo=UTC).timestamp())
    policy = parse(
        """\
        rules:
          - name: congress
            action: drop
            active:
              - {from: 2017-09-20, until: "2017-09-21T00:00:00+08:00"}
              - from: 2017-10-18T09:00:00+08:00
        """
    )
    rng = random.Random(0)

    def rule() -> str | None:
        return policy.decide(flow(), clock.now(), rng).rule

    assert rule() is None  # before the first window
    clock.advance(60)
    assert rule() == "congress"  # 2017-09-20 00:00 UTC: from is inclusive
    clock.set(datetime(2017, 9, 20, 15, 59, 59, tzinfo=UTC).timestamp())
    assert rule() == "congress"
    clock.advance(1)  # 2017-09-21 00:00 +08:00: until is exclusive
    assert rule() is None
    clock.set(datetime(2017, 10, 18, 0, 59, tzinfo=UTC).timestamp())
    assert rule() is None
    clock.advance(60)  # 09:00 in Beijing
    assert rule() == "congress"
    clock.advance(10 * 365 * 86400)  # open-ended
    assert rule() == "congress"
    assert policy.rules[0].is_active(clock.now())


def test_inactive_rule_falls_through() -> None:
    policy = parse(
        """\
        rules:
          - {name: later, action: drop, active: {from: 2030-01-01}}
          - {name: now, action: reset}
        """
    )
    assert decide(policy, flow(), now=T0).rule == "now"
    assert decide(policy, flow(), now=datetime(2030, 1, 1, tzinfo=UTC).timestamp()).rule == "later"


# --------------------------------------------------------------------------- API details


def test_decision_as_json_is_json() -> None:
    policy = parse("rules:\n  - {name: t, action: {kind: throttle, rate_kbps: 130}}\n")
    decision = decide(policy, flow())
    assert json.loads(json.dumps(decision.as_json())) == {
        "rule": "t",
        "action": {"kind": "throttle", "rate_kbps": 130.0},
        "effect": "throttle",
        "residual": False,
        "inspected": True,
        "fail": False,
        "skipped": [],
    }
    with pytest.raises(AttributeError):
        decision.rule = "other"  # type: ignore[misc]


def test_action_checks_its_parameters() -> None:
    assert Action("throttle", rate_kbps=1).blocking
    assert not ALLOW.blocking
    with pytest.raises(ValueError):
        Action("throttle")
    with pytest.raises(ValueError):
        Action("reset", ms=3)
    with pytest.raises(ValueError):
        Action("flaky", fail=0.5, mode="fail", stall_after_bytes=3)
    with pytest.raises(ValueError):
        Action("block")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Action("delay", ms=0)
    with pytest.raises(ValueError):
        Action("flaky", fail=1.5)
    with pytest.raises(ValueError):
        Action("throttle", rate_kbps=math.inf)
    assert Action("flaky", fail=0.5).as_json() == {"kind": "flaky", "fail": 0.5, "mode": "fail"}


def test_match_of_validates() -> None:
    assert Match.of(port="5222-5223")(flow(port=5223))
    with pytest.raises(ValueError):
        Match.of(server="10.0.0.0/33")


# --------------------------------------------------------------------------- documentation


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, flags=re.DOTALL)


def test_documentation_examples_parse() -> None:
    blocks = _yaml_blocks(DOCS.read_text())
    assert len(blocks) >= 5
    policies = [parse_policy(block, "docs/censor-policy.md") for block in blocks]
    names = {rule.name for policy in policies for rule in policy.rules}
    assert {"media-blocked", "chat-dropped", "twitter", "fully-encrypted"} <= names
    fet = next(r for p in policies for r in p.rules if r.name == "fully-encrypted")
    assert (fet.probability, fet.residual, fet.action.kind) == (0.26, 180.0, "drop")


def test_whatsapp_2017_timeline() -> None:
    blocks = _yaml_blocks(DOCS.read_text())
    policy = parse_policy(next(b for b in blocks if "GFW vs WhatsApp" in b), "doc")
    july = datetime(2017, 8, 1, tzinfo=UTC).timestamp()
    sept_10 = datetime(2017, 9, 10, tzinfo=UTC).timestamp()
    sept_25 = datetime(2017, 9, 25, tzinfo=UTC).timestamp()
    media = flow(protocol="tls", sni="mmg3.whatsapp.net")
    chat = flow(protocol="wa", port=5222, server="157.240.1.53")
    assert decide(policy, media, july).effect == "reset"
    assert decide(policy, chat, july).effect == "allow"
    assert decide(policy, chat, sept_10).rule == "chat-flapping"
    assert decide(policy, chat, sept_25).effect == "drop"
    media_by_address = flow(protocol="tls", port=443, server="157.240.1.53")
    assert decide(policy, media_by_address, sept_25).effect == "throttle"


# --------------------------------------------------------------------------- robustness

_KEYS = [
    "rules",
    "description",
    "name",
    "match",
    "action",
    "probability",
    "residual",
    "active",
    "protocol",
    "sni",
    "host",
    "server",
    "port",
    "ja3",
    "ja4",
    "fully_encrypted",
    "kind",
    "rate_kbps",
    "ms",
    "fail",
    "mode",
    "stall_after_bytes",
    "from",
    "until",
    "x",
]
_WORDS = [
    "reset",
    "drop",
    "allow",
    "delay",
    "throttle",
    "flaky",
    "stall",
    "tls",
    "*.a.example",
    "re:(",
    "re:^a$",
    "10.0.0.0/8",
    "10.0.0.1/8",
    "::/0",
    "5222-5223",
    "9-1",
    "2017-09-20",
    "2017-02-30T00:00:00",
    "not a date",
    "",
    "re:",
    "[",
    "*",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.sampled_from(_WORDS)
    | st.text(max_size=8)
)
_yamlish = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=25,
)


def _parses_or_policy_error(text: str) -> None:
    try:
        result = parse_policy(text, "fuzz.yaml")
    except PolicyError as exc:
        assert str(exc).startswith("fuzz.yaml")
        assert exc.line is None or exc.line >= 1
    else:
        assert isinstance(result, Policy)
        result.decide(flow(sni="a.example", fully_encrypted=True), T0, random.Random(0))
        json.dumps(result.as_json())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_gives_policy_or_policy_error(text: str) -> None:
    _parses_or_policy_error(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.just("rules"),
        st.lists(
            st.dictionaries(st.sampled_from(_KEYS), _yamlish, max_size=6),
            max_size=4,
        ),
        min_size=1,
    )
    | _yamlish,
    st.data(),
)
def test_yamlish_documents_give_policy_or_policy_error(
    document: object, data: st.DataObject
) -> None:
    text = yaml.safe_dump(document, default_flow_style=data.draw(st.booleans()))
    _parses_or_policy_error(text)
    cut = data.draw(st.integers(min_value=0, max_value=len(text)))
    junk = data.draw(
        st.sampled_from(["", ":", "- ", "\n  ", "{", "]", "&a ", "*a", "!!str ", "\t"])
    )
    _parses_or_policy_error(text[:cut] + junk + text[cut:])


# --------------------------------------------------------------------------- throughput

def test_the_decision_benchmark_policy_misses_every_flow() -> None:
    """``noisewall bench censor`` times the worst case: every rule evaluated, none matching."""
    policy = parse_policy(DECISION_POLICY, "bench")
    assert len(policy.rules) == 10
    flows = _unmatched_flows(200)
    assert all(decide(policy, record).rule is None for record in flows)


def test_transport_selects_udp_or_tcp_flows() -> None:
    policy = parse("""
        rules:
          - {name: quic, match: {transport: udp, port: 443}, action: drop}
          - {name: rest, match: {port: 443}, action: reset}
    """)
    assert decide(policy, flow(transport="udp")).rule == "quic"
    assert decide(policy, flow()).rule == "rest"


def test_the_dns_action_carries_its_forged_address() -> None:
    policy = parse("""
        rules:
          - {name: inject, match: {query: "*.twitter.com"},
             action: {kind: dns, answer: 203.0.113.99}}
    """)
    decision = decide(policy, flow(protocol="dns", transport="udp", query="api.twitter.com"))
    assert decision.effect == "dns" and decision.action.answer == "203.0.113.99"
    assert decision.as_json()["action"] == {"kind": "dns", "answer": "203.0.113.99"}
    assert decide(policy, flow(protocol="dns", query="example.org")).effect == "allow"
    assert decide(policy, flow(protocol="http", host="api.twitter.com")).effect == "allow"


@pytest.mark.parametrize(("rule", "field", "message"), [
    ("{match: {transport: udp, sni: a.example}, action: drop}", "rules[0].match.sni",
     "not for udp rules (they match transport, server, port)"),
    ("{match: {transport: udp, server: '*.example'}, action: drop}", "rules[0].match.server",
     "udp rules match IPv4 addresses or CIDRs, not '*.example'"),
    ("{match: {transport: udp}, action: reset}", "rules[0].action", "udp rules allow or drop"),
    ("{match: {transport: udp}, action: drop, probability: 0.5}", "rules[0].probability",
     "not for udp rules (enforced in the kernel, per packet)"),
    ("{action: {kind: dns, answer: nowhere}}", "rules[0].action.answer",
     "'nowhere' is not an IPv4 address"),
])
def test_rules_nftables_or_the_forger_cannot_carry_out_are_refused(
        rule: str, field: str, message: str) -> None:
    exc = error(f"rules:\n  - {rule}\n")
    assert (exc.line, exc.field, exc.message) == (2, field, message)
