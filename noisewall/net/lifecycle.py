"""Bringing a lab network up and down: namespaces, veth pairs, addresses, routes, /etc/netns.

``up`` refuses a network that already exists, even in part (a killed ``up``
leaves a part): it says to run ``down`` first, rather than guess whether what
is there is what the caller wants. ``down`` is idempotent and removes what
exists of a network in any state; ``down_all`` finds everything by
noisewall's prefixes, for what killed runs left behind.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from noisewall.errors import NetError
from noisewall.net import processes, resolver_process, tools
from noisewall.net.enter import NETNS_DIR, entered
from noisewall.net.hosts import add_host, check_address
from noisewall.net.topology import (
    INTERFACE_PREFIX,
    NAMESPACE_PREFIX,
    NETNS_ETC,
    NFT_TABLE_PREFIX,
    RESOLVER_NAME,
    STATE_ROOT,
    Link,
    Network,
    Side,
)
from noisewall.net.trust import create_authority
from noisewall.selfsigned import dns_name

DESCRIPTION_FILE = "network.json"
RESOLV_CONF = "nameserver {resolver}\noptions timeout:1 attempts:2\n"

HostAddress = ipaddress.IPv4Address | str | None


def up(name: str, hosts: Mapping[str, HostAddress] | None = None) -> Network:
    """Create network ``name`` with the lab names ``hosts`` and start its resolver.

    ``hosts`` maps names to addresses in the outside namespace (None: the next
    free server address). NetError if not root, if ``ip`` is missing, or if
    the network exists (wholly or in part); on any failure what was made is
    removed again.
    """
    network = Network.named(name)
    for host, address in (hosts or {}).items():
        dns_name(host)
        if address is not None:
            check_address(network, address)
    tools.require_root()
    tools.tool("ip")
    existing = _existing_parts(network)
    try:
        if not existing:
            # Made first and exclusively: of two `up`s of one name, the second stops here.
            network.state_dir.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        existing.append(str(network.state_dir))
    if existing:
        raise NetError(f"network {name!r} already exists ({', '.join(existing)}): "
                       f"noisewall net down --name {name} first")
    try:
        _create_namespaces(network)
        _write_etc(network)
        create_authority(network)
        add_host(network, RESOLVER_NAME, network.resolver)
        for host, address in (hosts or {}).items():
            add_host(network, host, address)
        resolver_process.start(network)
        (network.state_dir / DESCRIPTION_FILE).write_text(network.model_dump_json(indent=2))
    except BaseException:
        down(name)
        raise
    return network


def down(name: str) -> None:
    """Remove network ``name`` wholly: its processes, namespaces, /etc/netns files and state."""
    network = Network.named(name)
    tools.require_root()
    resolver_process.stop(network)
    _remove_namespaces(network.namespaces)
    for namespace in network.namespaces:
        shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
    shutil.rmtree(network.state_dir, ignore_errors=True)


def down_all() -> list[str]:
    """Remove every noisewall network and leftover; the names of the networks found.

    Found by prefix: namespaces ``noisewall-*``, /etc/netns/noisewall-*,
    state folders, and in the calling namespace ``noisewall*`` nftables tables
    and ``nw-*`` interfaces (none are made there, but a future or foreign
    version of noisewall might have).
    """
    tools.require_root()
    names = list_networks()
    for name in names:
        if _valid(name):
            resolver_process.stop(Network.named(name))
    _remove_namespaces(_prefixed(n for n in _namespace_list()))
    for leftover in _prefixed(p.name for p in _children(NETNS_ETC)):
        shutil.rmtree(NETNS_ETC / leftover, ignore_errors=True)
    for folder in _children(STATE_ROOT):
        shutil.rmtree(folder, ignore_errors=True)
    for folder in (STATE_ROOT, STATE_ROOT.parent):
        with contextlib.suppress(OSError):  # not empty: another network came up meanwhile
            folder.rmdir()
    _remove_root_leftovers()
    return names


def list_networks() -> list[str]:
    """Names of the networks that exist, wholly or in part."""
    names = {p.name for p in _children(STATE_ROOT)}
    for namespace in _prefixed(_namespace_list()):
        base, _, side = namespace[len(NAMESPACE_PREFIX):].rpartition("-")
        if side in {s.value for s in Side}:
            names.add(base)
    return sorted(names)


def load(name: str) -> Network:
    """The description of network ``name`` if it is up, else NetError."""
    network = Network.named(name)
    try:
        return Network.model_validate_json((network.state_dir / DESCRIPTION_FILE).read_text())
    except FileNotFoundError:
        raise NetError(f"network {name!r} is not up (noisewall net up --name {name})") from None


def _existing_parts(network: Network) -> list[str]:
    present = set(_namespace_list())
    parts = [namespace for namespace in network.namespaces if namespace in present]
    parts += [str(path) for path in (*map(network.etc_dir, Side), network.state_dir)
              if path.exists()]
    return parts


def _create_namespaces(network: Network) -> None:
    for namespace in network.namespaces:
        tools.run("ip", "netns", "add", namespace)
        tools.ip_in(namespace, "link", "set", "lo", "up")
    _create_link(network.border_inside, network.client)
    _create_link(network.border_outside, network.server)
    tools.ip_in(network.client.namespace, "route", "add", "default", "via",
                str(network.border_inside.address.ip))
    tools.ip_in(network.server.namespace, "route", "add", "default", "via",
                str(network.border_outside.address.ip))
    with entered(network.namespace(Side.BORDER)):
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def _create_link(border_end: Link, far_end: Link) -> None:
    """A veth pair made in the border with its far end moved straight into its namespace.

    Neither end ever exists in the root namespace.
    """
    tools.ip_in(border_end.namespace, "link", "add", border_end.interface, "type", "veth",
                "peer", "name", far_end.interface, "netns", far_end.namespace)
    for end in (border_end, far_end):
        tools.ip_in(end.namespace, "address", "add", str(end.address), "dev", end.interface)
        tools.ip_in(end.namespace, "link", "set", end.interface, "up")


def _write_etc(network: Network) -> None:
    for side in Side:
        folder = network.etc_dir(side)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "resolv.conf").write_text(RESOLV_CONF.format(resolver=network.resolver))


def _remove_namespaces(namespaces: Iterable[str]) -> None:
    present = set(_namespace_list())
    chosen = [namespace for namespace in namespaces if namespace in present]
    processes.stop([pid for namespace in chosen for pid in processes.pids_in(namespace)])
    for namespace in chosen:
        tools.run_quietly("ip", "netns", "delete", namespace)


def _remove_root_leftovers() -> None:
    try:
        listing = json.loads(tools.run("nft", "-j", "list", "tables"))
    except NetError:
        listing = {}  # no nft, or no nf_tables in this kernel: then nothing was made with it
    for entry in listing.get("nftables", []):
        table = entry.get("table")
        if table and table["name"].startswith(NFT_TABLE_PREFIX):
            tools.run_quietly("nft", "delete", "table", table["family"], table["name"])
    links = json.loads(tools.run("ip", "-j", "link", "show"))
    for link in links:
        if link["ifname"].startswith(INTERFACE_PREFIX):
            tools.run_quietly("ip", "link", "delete", link["ifname"])


def _namespace_list() -> list[str]:
    return sorted(p.name for p in _children(NETNS_DIR))


def _prefixed(names: Iterable[str]) -> list[str]:
    return [name for name in names if name.startswith(NAMESPACE_PREFIX)]


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except FileNotFoundError:
        return []


def _valid(name: str) -> bool:
    try:
        Network.named(name)
    except ValueError:
        return False
    return True
