"""The lab network: namespaces inside (users) - border (censor) - outside (servers).

The API other packages use::

    from noisewall.net import Network, Side, temporary_network, load, entered, run_argv
    with temporary_network("t1234", {"chat.lab": None}) as network:
        network.namespace(Side.BORDER)          # "noisewall-t1234-border"
        network.border_inside.interface         # "nw-t1234-bi": iifname of the users' traffic
        with entered(network.namespace(Side.OUTSIDE)):
            listener = socket.create_server((str(network.server_addresses[0]), 443))
        subprocess.run(run_argv(network, Side.INSIDE, ["curl", "https://chat.lab/"]))

See docs/net.md.
"""

from noisewall.errors import NetError
from noisewall.net.enter import entered
from noisewall.net.hosts import add_host, read_hosts
from noisewall.net.lifecycle import down, down_all, list_networks, load, up
from noisewall.net.run import run_argv
from noisewall.net.session import temporary_network, temporary_network_async
from noisewall.net.status import NetworkStatus, network_status
from noisewall.net.topology import NFT_TABLE_PREFIX, Link, Network, Side
from noisewall.net.trust import issue_server_certificate, load_authority

__all__ = [
    "NFT_TABLE_PREFIX",
    "Link",
    "NetError",
    "Network",
    "NetworkStatus",
    "Side",
    "add_host",
    "down",
    "down_all",
    "entered",
    "issue_server_certificate",
    "list_networks",
    "load",
    "load_authority",
    "network_status",
    "read_hosts",
    "run_argv",
    "temporary_network",
    "temporary_network_async",
    "up",
]
