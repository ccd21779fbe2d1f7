"""Where the lab's servers live: the loopback block, or the lab network's outside block.

Scenarios name the lab's servers by address (``server: 127.0.10.1``), as
censors' rules do. On loopback the servers sit in ``127.0.10.0/24``; in a lab
network (``noisewall lab --net``) they sit in the outside namespace's
``203.0.113.0/24`` with the same last octet: chat ``.1``, media ``.2``,
tunnel servers ``.3``. :func:`relocate_policy` moves a scenario's rules from
one block to the other, so one scenario file runs in both modes: an address or
network inside the loopback block becomes the same host bits in the network's
block; every other entry is left as written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from noisewall.censor.policy import Match, Policy
from noisewall.net import Network, tools
from noisewall.records.endpoint import Endpoint

LOOPBACK_BLOCK = ipaddress.IPv4Network("127.0.10.0/24")
_CHAT, _MEDIA, _TUNNEL = 1, 2, 3


@dataclass(frozen=True)
class AddressPlan:
    """The lab's server addresses and where its own gateways listen."""

    block: ipaddress.IPv4Network
    gateway: str
    """Censor routes and SOCKS5 gateways (loopback); the management gateway (network)."""

    def _host(self, number: int) -> str:
        return str(self.block[number])

    @property
    def chat(self) -> str:
        """The chat server (NoiseSocket)."""
        return self._host(_CHAT)

    @property
    def media(self) -> str:
        """The media server (HTTPS)."""
        return self._host(_MEDIA)

    @property
    def tunnel(self) -> str:
        """The tunnel servers."""
        return self._host(_TUNNEL)

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server address the lab uses."""
        return self.chat, self.media, self.tunnel


LOOPBACK_PLAN = AddressPlan(LOOPBACK_BLOCK, "127.0.0.1")


def network_plan(network: Network) -> AddressPlan:
    """The plan inside ``network``: its outside block, the management gateway at the border."""
    return AddressPlan(network.outside_subnet, str(network.border_inside.address.ip))


def place_servers(network: Network, plan: AddressPlan) -> None:
    """Give the outside namespace's interface the plan's server addresses (idempotent)."""
    _add_addresses(network.server.namespace, network.server.interface,
                   [ipaddress.IPv4Address(a) for a in plan.servers], network.outside_subnet)


#: The first of the extra user addresses :func:`client_sources` adds on the inside.
_FIRST_SOURCE = 10


def client_sources(network: Network, count: int) -> list[str]:
    """``count`` user addresses on the inside (added if missing), one per fresh connection.

    The GFW's residual blocking keys on the client's address, so an arms race
    that measures the per-connection decision needs one address per attempt,
    like many users behind the same border.
    """
    subnet = network.inside_subnet
    last = _FIRST_SOURCE + count - 1
    if count <= 0 or last >= subnet.num_addresses - 1:
        raise ValueError(f"between 1 and {subnet.num_addresses - 1 - _FIRST_SOURCE} sources")
    addresses = [subnet[n] for n in range(_FIRST_SOURCE, last + 1)]
    _add_addresses(network.client.namespace, network.client.interface, addresses, subnet)
    return [str(a) for a in addresses]


#: The inside namespace's nftables table for :func:`spread_sources`.
_SOURCES_TABLE = "noisewall_lab_sources"


@contextlib.contextmanager
def spread_sources(network: Network, target: Endpoint, sources: list[str]) -> Iterator[None]:
    """While entered, new TCP connections from the inside to ``target`` leave from ``sources``
    in turn (source NAT in the inside namespace).

    For programs that cannot choose their source address (a third-party
    tunnel's client): each fresh connection then looks like another user's.
    """
    entries = ", ".join(f"{index} : {address}" for index, address in enumerate(sources))
    ruleset = (f"table ip {_SOURCES_TABLE}\ndelete table ip {_SOURCES_TABLE}\n"
               f"table ip {_SOURCES_TABLE} {{\n  chain postrouting {{\n"
               "    type nat hook postrouting priority srcnat; policy accept;\n"
               f"    ip daddr {target.host} tcp dport {target.port} "
               f"snat to numgen inc mod {len(sources)} map {{ {entries} }}\n  }}\n}}\n")
    namespace = network.client.namespace
    tools.run("ip", "netns", "exec", namespace, tools.tool("nft"), "-f", "-", stdin=ruleset)
    try:
        yield
    finally:
        tools.run_quietly("ip", "netns", "exec", namespace, tools.tool("nft"), "delete", "table",
                          "ip", _SOURCES_TABLE)


def _add_addresses(namespace: str, interface: str, addresses: list[ipaddress.IPv4Address],
                   subnet: ipaddress.IPv4Network) -> None:
    batch = "".join(f"address replace {a}/{subnet.prefixlen} dev {interface}\n"
                    for a in addresses)
    tools.run("ip", "-n", namespace, "-batch", "-", stdin=batch)


def relocate_policy(policy: Policy, plan: AddressPlan) -> Policy:
    """``policy`` with server entries in the loopback block moved into ``plan``'s block."""
    if plan.block == LOOPBACK_BLOCK:
        return policy
    rules = []
    for rule in policy.rules:
        servers = rule.match.spec.server
        if servers is None:
            rules.append(rule)
            continue
        spec = rule.match.spec.model_copy(
            update={"server": tuple(_relocate(entry, plan.block) for entry in servers)})
        rules.append(dataclasses.replace(rule, match=Match(spec)))
    return Policy(rules, source=policy.source, description=policy.description)


def _relocate(entry: str, block: ipaddress.IPv4Network) -> str:
    try:
        network = ipaddress.ip_network(entry)
    except ValueError:
        return entry  # a host-name glob
    if not isinstance(network, ipaddress.IPv4Network) or not network.subnet_of(LOOPBACK_BLOCK):
        return entry
    offset = int(network.network_address) - int(LOOPBACK_BLOCK.network_address)
    moved = ipaddress.IPv4Network((int(block.network_address) + offset, network.prefixlen))
    return str(moved.network_address) if network.prefixlen == 32 else str(moved)
