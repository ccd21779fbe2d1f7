"""The network's description: names within Linux's limits, prefixes, the addressing plan."""

from __future__ import annotations

import ipaddress

import pytest

from noisewall.net import Network, Side
from noisewall.net.topology import INTERFACE_PREFIX, MAX_NAME_LENGTH, NAMESPACE_PREFIX

IFNAMSIZ = 16  # including the terminating NUL


def test_every_name_carries_noisewalls_prefix_and_the_network_name() -> None:
    network = Network.named("lab")
    assert network.namespaces == ("noisewall-lab-inside", "noisewall-lab-border",
                                  "noisewall-lab-outside")
    links = (network.client, network.border_inside, network.border_outside, network.server)
    assert [link.interface for link in links] == ["nw-lab-i", "nw-lab-bi", "nw-lab-bo", "nw-lab-o"]
    assert all(link.namespace.startswith(NAMESPACE_PREFIX) for link in links)
    assert all(link.interface.startswith(INTERFACE_PREFIX) for link in links)


def test_the_longest_name_still_fits_an_interface_name() -> None:
    network = Network.named("a" * MAX_NAME_LENGTH)
    for link in (network.client, network.border_inside, network.border_outside, network.server):
        assert len(link.interface) < IFNAMSIZ


@pytest.mark.parametrize("bad", ["", "a" * (MAX_NAME_LENGTH + 1), "Lab", "-lab", "lab-",
                                 "la b", "lab/x", "lab.x", "läb"])
def test_bad_names_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a network name"):
        Network.named(bad)


def test_the_border_joins_the_two_subnets_and_the_ends_share_each_subnet() -> None:
    network = Network.named("lab")
    assert network.client.address.network == network.border_inside.address.network
    assert network.server.address.network == network.border_outside.address.network
    assert network.inside_subnet != network.outside_subnet
    assert network.client.namespace == network.namespace(Side.INSIDE)
    assert network.border_inside.namespace == network.border_outside.namespace \
        == network.namespace(Side.BORDER)
    assert network.server.namespace == network.namespace(Side.OUTSIDE)


def test_lab_addresses_are_documentation_ranges_the_resolver_and_servers_outside() -> None:
    network = Network.named("lab")
    documentation = [ipaddress.IPv4Network(n) for n in ("198.51.100.0/24", "203.0.113.0/24")]
    assert network.inside_subnet in documentation and network.outside_subnet in documentation
    assert network.resolver in network.outside_subnet
    assert all(a in network.outside_subnet for a in network.server_addresses)
    assert network.resolver not in network.server_addresses


def test_the_description_round_trips_through_json() -> None:
    network = Network.named("lab")
    assert Network.model_validate_json(network.model_dump_json()) == network
