"""The censor's nftables table in the border namespace: redirects and UDP rules (text, sans-IO).

One table, ``ip noisewall_censor``, holds everything the in-path censor adds
to the border's router, so that removing the table removes all of it:

* ``prerouting`` (nat): TCP forwarded from the users is redirected to the
  censor's transparent listener, UDP to port 53 to its DNS forger;
* ``forward`` (filter): each ``transport: udp`` policy rule, in order, as a
  kernel rule that allows or drops the packets and records the flow
  (client and server address and port) in the rule's dynamic set; flows no rule matches
  go to the ``udp_default`` set. The censor reads the sets to log each new
  UDP flow's decision (this kernel has no NFQUEUE: the censor cannot see
  UDP packets itself, only what the kernel decided).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from noisewall.censor.policy import Policy, Rule
from noisewall.records.endpoint import Endpoint

TABLE = "noisewall_censor"
FAMILY = "ip"
DEFAULT_SET = "udp_default"
#: Seconds a UDP flow stays in its set after its last packet: a flow idle for longer is new again.
UDP_FLOW_TIMEOUT = 30


@dataclass(frozen=True)
class Redirects:
    """Where the border sends the users' flows: interface and the censor's listening ports."""

    interface: str
    tcp_port: int
    dns_port: int


def udp_rules(policy: Policy) -> list[Rule]:
    """The policy's ``transport: udp`` rules, in order."""
    return [rule for rule in policy.rules if rule.match.spec.transport == "udp"]


def set_name(index: int) -> str:
    """The dynamic set of the ``index``-th UDP rule."""
    return f"udp_{index}"


def ruleset(redirects: Redirects, policy: Policy) -> str:
    """``nft -f`` input that creates (or atomically replaces) the censor's table."""
    interface = json.dumps(redirects.interface)  # a quoted nft string
    flow = "{ ip saddr . udp sport . ip daddr . udp dport }"
    sets = [*(set_name(i) for i in range(len(udp_rules(policy)))), DEFAULT_SET]
    forward = [
        f"iifname {interface}{_conditions(rule)} update @{set_name(i)} {flow} "
        f"{'drop' if rule.action.kind == 'drop' else 'accept'}"
        for i, rule in enumerate(udp_rules(policy))
    ]
    forward.append(f"iifname {interface} meta l4proto udp update @{DEFAULT_SET} {flow} accept")
    lines = [
        f"table {FAMILY} {TABLE}",
        f"delete table {FAMILY} {TABLE}",
        f"table {FAMILY} {TABLE} {{",
        *(f"  set {name} {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; "
          f"flags dynamic,timeout; timeout {UDP_FLOW_TIMEOUT}s; }}" for name in sets),
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        f"    iifname {interface} fib daddr type local return",
        f"    iifname {interface} udp dport 53 redirect to :{redirects.dns_port}",
        f"    iifname {interface} meta l4proto tcp redirect to :{redirects.tcp_port}",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        *(f"    {line}" for line in forward),
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def removal() -> str:
    """``nft -f`` input that removes the censor's table, if it is there."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"


def _conditions(rule: Rule) -> str:
    spec = rule.match.spec
    out = ""
    if spec.server is not None:
        out += f" ip daddr {_nft_set(str(ipaddress.IPv4Network(s)) for s in spec.server)}"
    else:
        out += " meta l4proto udp"
    if spec.port is not None:
        ports = (str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spec.port)
        out += f" udp dport {_nft_set(ports)}"
    return out


def _nft_set(items: Iterator[str] | Sequence[str]) -> str:
    return "{ " + ", ".join(items) + " }"


@dataclass(frozen=True)
class UdpFlow:
    """A UDP flow the kernel has decided on: which set (rule) holds it, and its endpoints."""

    set: str
    client: Endpoint
    server: Endpoint


def parse_sets(listing: str) -> set[UdpFlow]:
    """The flows in ``nft -j list table`` output (sets other than the censor's are ignored)."""
    flows: set[UdpFlow] = set()
    for item in json.loads(listing).get("nftables", []):
        found = item.get("set")
        if not isinstance(found, dict) or found.get("table") != TABLE:
            continue
        for element in found.get("elem", []):
            value = element.get("elem", {}).get("val", element) if isinstance(element, dict) \
                else element
            parts = value.get("concat") if isinstance(value, dict) else None
            if isinstance(parts, list) and len(parts) == 4:
                client, client_port, server, port = parts
                flows.add(UdpFlow(found["name"], Endpoint(str(client), int(client_port)),
                                  Endpoint(str(server), int(port))))
    return flows
