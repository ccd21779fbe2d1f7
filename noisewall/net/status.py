"""What exists of a lab network: for ``noisewall net status`` and for code that checks first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noisewall.net import resolver_process
from noisewall.net.enter import NETNS_DIR
from noisewall.net.hosts import read_hosts
from noisewall.net.topology import Network, Side


@dataclass(frozen=True, slots=True)
class NetworkStatus:
    """One network's namespaces, resolver and names as they are now."""

    network: Network
    namespaces: dict[Side, bool]
    resolver_pid: int | None
    hosts: dict[str, str]

    @property
    def complete(self) -> bool:
        """Every namespace exists and the resolver runs."""
        return all(self.namespaces.values()) and self.resolver_pid is not None

    def as_json(self) -> dict[str, Any]:
        """The status as plain JSON data."""
        network = self.network
        return {
            "name": network.name,
            "state": "up" if self.complete else "partial",
            "namespaces": {side.value: {"name": network.namespace(side), "exists": exists}
                           for side, exists in self.namespaces.items()},
            "client": str(network.client_address),
            "border_interfaces": {"inside": network.border_inside.interface,
                                  "outside": network.border_outside.interface},
            "resolver": {"address": str(network.resolver), "pid": self.resolver_pid},
            "hosts": self.hosts,
            "state_dir": str(network.state_dir),
        }


def network_status(name: str) -> NetworkStatus:
    """The status of network ``name`` (which may be partly or wholly absent)."""
    network = Network.named(name)
    try:
        hosts = {host: str(address) for host, address in read_hosts(network).items()}
    except ValueError:
        hosts = {}
    return NetworkStatus(
        network=network,
        namespaces={side: (NETNS_DIR / network.namespace(side)).exists() for side in Side},
        resolver_pid=resolver_process.running_pid(network),
        hosts=hosts,
    )
