"""The censor's nftables table as text, and reading the kernel's UDP flow sets back (no kernel)."""

from __future__ import annotations

import json

from noisewall.censor.nftables import (
    DEFAULT_SET,
    TABLE,
    Redirects,
    UdpFlow,
    parse_sets,
    removal,
    ruleset,
    udp_rules,
)
from noisewall.censor.policy import parse_policy
from noisewall.records.endpoint import Endpoint

POLICY = parse_policy("""rules:
  - {name: sni, match: {sni: "*.example"}, action: reset}
  - {name: no-quic, match: {transport: udp, server: [203.0.113.10, 203.0.113.64/26],
     port: [443, "9000-9100"]}, action: drop}
  - {name: dns-ok, match: {transport: udp, port: 53}, action: allow}
""")


def test_only_udp_rules_become_kernel_rules_in_order() -> None:
    assert [rule.name for rule in udp_rules(POLICY)] == ["no-quic", "dns-ok"]
    text = ruleset(Redirects("nw-t1-bi", 40000, 40001), POLICY)
    forward = [line.strip() for line in text.splitlines() if "update @" in line]
    assert forward == [
        'iifname "nw-t1-bi" ip daddr { 203.0.113.10/32, 203.0.113.64/26 } udp dport '
        "{ 443, 9000-9100 } update @udp_0 { ip saddr . udp sport . ip daddr . udp dport } drop",
        'iifname "nw-t1-bi" meta l4proto udp udp dport { 53 } update @udp_1 '
        "{ ip saddr . udp sport . ip daddr . udp dport } accept",
        f'iifname "nw-t1-bi" meta l4proto udp update @{DEFAULT_SET} '
        "{ ip saddr . udp sport . ip daddr . udp dport } accept",
    ]


def test_the_table_replaces_itself_and_redirects_the_users_flows() -> None:
    text = ruleset(Redirects("nw-t1-bi", 40000, 40001), parse_policy("rules: []"))
    assert text.startswith(f"table ip {TABLE}\ndelete table ip {TABLE}\n")  # atomic replace
    assert 'iifname "nw-t1-bi" udp dport 53 redirect to :40001' in text
    assert 'iifname "nw-t1-bi" meta l4proto tcp redirect to :40000' in text
    assert text.index("fib daddr type local return") < text.index("redirect")
    assert removal() == f"table ip {TABLE}\ndelete table ip {TABLE}\n"


def test_flows_are_read_back_from_the_sets() -> None:
    listing = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"set": {"family": "ip", "name": "udp_0", "table": TABLE, "elem": [
            {"elem": {"val": {"concat": ["198.51.100.2", 50000, "203.0.113.10", 443]},
                      "timeout": 30, "expires": 29}},
            {"concat": ["198.51.100.2", 50001, "203.0.113.10", 443]},
        ]}},
        {"set": {"family": "ip", "name": "udp_0", "table": "someone_else", "elem": [
            {"concat": ["10.0.0.1", 1, "10.0.0.2", 2]}]}},
        {"chain": {"family": "ip", "table": TABLE, "name": "forward"}},
    ]}
    assert parse_sets(json.dumps(listing)) == {
        UdpFlow("udp_0", Endpoint("198.51.100.2", 50000), Endpoint("203.0.113.10", 443)),
        UdpFlow("udp_0", Endpoint("198.51.100.2", 50001), Endpoint("203.0.113.10", 443)),
    }
