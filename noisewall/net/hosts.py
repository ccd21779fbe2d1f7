"""The lab's names: a table in the network's state folder that the resolver answers from.

``hosts.json`` maps each declared name to its address in the outside
namespace; it is replaced atomically under a lock, so several processes (the
CLI, the lab, a scenario) may declare names while the resolver reads it.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from noisewall.errors import NetError
from noisewall.net import tools
from noisewall.net.topology import Network
from noisewall.selfsigned import dns_name

HOSTS_FILE = "hosts.json"


def hosts_path(network: Network) -> Path:
    """Where ``network``'s names are kept."""
    return network.state_dir / HOSTS_FILE


def parse_hosts(text: str) -> dict[str, ipaddress.IPv4Address]:
    """The table in ``text`` (JSON object name -> address), or ValueError."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("hosts table: a JSON object of name -> address expected")
    return {dns_name(name): ipaddress.IPv4Address(address) for name, address in raw.items()}


def read_hosts(network: Network) -> dict[str, ipaddress.IPv4Address]:
    """``network``'s names and addresses (empty if none are declared)."""
    try:
        return parse_hosts(hosts_path(network).read_text())
    except FileNotFoundError:
        return {}


def add_host(network: Network, name: str,
             address: ipaddress.IPv4Address | str | None = None) -> ipaddress.IPv4Address:
    """Declare ``name`` in the lab's DNS and return its address.

    Without ``address`` the name gets one of the network's free server
    addresses (the same one again if it is already declared). The address is
    put on the outside namespace's interface, so a server can bind it.
    ValueError for a bad name or an address outside the servers' subnet,
    NetError if the network is not up or no server address is free.
    """
    name = dns_name(name)
    with _locked(network):
        hosts = read_hosts(network)
        chosen = (check_address(network, address) if address is not None
                  else hosts.get(name) or _free_address(network, hosts))
        _ensure_address(network, chosen)
        hosts[name] = chosen
        _write(network, hosts)
    return chosen


def check_address(network: Network,
                  address: ipaddress.IPv4Address | str) -> ipaddress.IPv4Address:
    """``address`` as a server address of ``network``, or ValueError saying which ones are."""
    chosen = ipaddress.IPv4Address(address)
    subnet = network.outside_subnet
    reserved = {subnet.network_address, subnet.broadcast_address,
                network.border_outside.address.ip}
    if chosen not in subnet or chosen in reserved:
        raise ValueError(f"{chosen} is not a server address: use one in {subnet} other than "
                         f"{', '.join(sorted(str(a) for a in reserved))} (e.g. "
                         f"{network.server_addresses[0]}-{network.server_addresses[-1]})")
    return chosen


def _free_address(network: Network,
                  hosts: dict[str, ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    taken = set(hosts.values())
    for candidate in network.server_addresses:
        if candidate not in taken:
            return candidate
    raise NetError(f"all {len(network.server_addresses)} server addresses of network "
                   f"{network.name!r} are taken: give the name an address (NAME=ADDR)")


def _ensure_address(network: Network, address: ipaddress.IPv4Address) -> None:
    link = network.server
    shown = json.loads(tools.ip_in(link.namespace, "-j", "address", "show", "dev",
                                   link.interface))
    present = {info["local"] for entry in shown for info in entry.get("addr_info", [])}
    if str(address) not in present:
        tools.ip_in(link.namespace, "address", "add",
                    f"{address}/{link.address.network.prefixlen}", "dev", link.interface)


def _write(network: Network, hosts: dict[str, ipaddress.IPv4Address]) -> None:
    path = hosts_path(network)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({name: str(address) for name, address in hosts.items()},
                                    indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


@contextmanager
def _locked(network: Network) -> Iterator[None]:
    if not network.state_dir.is_dir():
        raise NetError(f"network {network.name!r} is not up (noisewall net up --name "
                       f"{network.name})")
    with open(network.state_dir / "hosts.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
