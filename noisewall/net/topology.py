"""What a lab network is: its namespaces, interfaces, addresses and routes, as validated data.

Every name carries noisewall's prefix so that ``noisewall net down --all`` can
find what a killed run left behind and touch nothing else: namespaces are
``noisewall-NAME-inside|border|outside``, interfaces ``nw-NAME-<role>`` (within
Linux's 15-character limit), nftables tables ``noisewall*``. The addresses are
documentation ranges (RFC 5737) that exist only inside the lab's namespaces::

    inside (users)             border (the censor's router)      outside (servers)
    nw-NAME-i 198.51.100.2 --- nw-NAME-bi 198.51.100.1
                               nw-NAME-bo 203.0.113.1 ---------- nw-NAME-o 203.0.113.10-19
                                                                           203.0.113.53 (DNS)

Nothing in the root namespace routes to them: no interface or route is ever
made there, so traffic from the host never enters the lab, and the lab has no
way out. (The host's own 192.0.2.0/24, TEST-NET-1 on these machines, is
left alone for that reason.)
"""

from __future__ import annotations

import enum
import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

NAMESPACE_PREFIX = "noisewall-"
"""Every network namespace noisewall creates starts with this."""
INTERFACE_PREFIX = "nw-"
"""Every interface noisewall creates starts with this."""
NFT_TABLE_PREFIX = "noisewall"
"""Every nftables table noisewall (or the censor) creates starts with this."""
STATE_ROOT = Path("/run/noisewall/net")
"""Per-network state: ``STATE_ROOT/NAME/`` (description, hosts, CA, resolver pid and log)."""
NETNS_ETC = Path("/etc/netns")
"""``ip netns exec NS`` bind-mounts ``NETNS_ETC/NS/<entry>`` over ``/etc/<entry>``."""
DEFAULT_NAME = "lab"

MAX_NAME_LENGTH = 8
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")

INSIDE_SUBNET = ipaddress.IPv4Network("198.51.100.0/24")  # TEST-NET-2
OUTSIDE_SUBNET = ipaddress.IPv4Network("203.0.113.0/24")  # TEST-NET-3
BORDER_INSIDE_ADDRESS = ipaddress.IPv4Address("198.51.100.1")
CLIENT_ADDRESS = ipaddress.IPv4Address("198.51.100.2")
BORDER_OUTSIDE_ADDRESS = ipaddress.IPv4Address("203.0.113.1")
SERVER_ADDRESSES = tuple(ipaddress.IPv4Address(f"203.0.113.{n}") for n in range(10, 20))
RESOLVER_ADDRESS = ipaddress.IPv4Address("203.0.113.53")
RESOLVER_NAME = "resolver.lab"
"""A lab name that always names the resolver."""


def check_name(value: str) -> str:
    """``value`` as a network name, or ValueError saying why it is not one."""
    if not (0 < len(value) <= MAX_NAME_LENGTH and _NAME.fullmatch(value)):
        raise ValueError(f"{value!r} is not a network name: 1 to {MAX_NAME_LENGTH} lower-case "
                         "letters, digits or inner hyphens (it goes into interface names, "
                         "which Linux limits to 15 characters)")
    return value


NetworkName = Annotated[str, AfterValidator(check_name)]


class Side(enum.StrEnum):
    """The three namespaces of a lab network."""

    INSIDE = "inside"
    """The users: clients and probes; their traffic leaves through the border."""
    BORDER = "border"
    """The censor's router: forwards between inside and outside (IP forwarding on)."""
    OUTSIDE = "outside"
    """The servers and the lab's DNS resolver."""


class Link(BaseModel):
    """One end of a veth pair: the interface, its namespace and its address."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    interface: str
    address: ipaddress.IPv4Interface


class Network(BaseModel):
    """A lab network's description: what code that uses the network needs to know.

    Built from a name alone (:meth:`named`); everything else follows from it.
    A censor in the border writes ``iifname`` rules with
    :attr:`border_inside` / :attr:`border_outside`'s interfaces; a server binds
    one of :attr:`server_addresses` in the outside namespace.
    """

    model_config = ConfigDict(frozen=True)

    name: NetworkName
    client: Link
    """The inside namespace's interface (the users' address, default route via the border)."""
    border_inside: Link
    """The border's inside-facing interface (``iifname`` of traffic from the users)."""
    border_outside: Link
    """The border's outside-facing interface (``iifname`` of traffic from the servers)."""
    server: Link
    """The outside namespace's interface; it carries every server address and the resolver's."""
    server_addresses: tuple[ipaddress.IPv4Address, ...]
    """Addresses for the lab's services, handed out in order by :func:`add_host`."""
    resolver: ipaddress.IPv4Address
    """The lab's DNS resolver (UDP and TCP port 53), in the outside namespace."""
    state_dir: Path

    @classmethod
    def named(cls, name: str = DEFAULT_NAME) -> Network:
        """The network called ``name`` (ValueError for a bad name); nothing is created."""
        check_name(name)
        inside, border, outside = (namespace_name(name, side) for side in Side)
        return cls(
            name=name,
            client=Link(namespace=inside, interface=f"{INTERFACE_PREFIX}{name}-i",
                        address=_interface(CLIENT_ADDRESS, INSIDE_SUBNET)),
            border_inside=Link(namespace=border, interface=f"{INTERFACE_PREFIX}{name}-bi",
                               address=_interface(BORDER_INSIDE_ADDRESS, INSIDE_SUBNET)),
            border_outside=Link(namespace=border, interface=f"{INTERFACE_PREFIX}{name}-bo",
                                address=_interface(BORDER_OUTSIDE_ADDRESS, OUTSIDE_SUBNET)),
            server=Link(namespace=outside, interface=f"{INTERFACE_PREFIX}{name}-o",
                        address=_interface(SERVER_ADDRESSES[0], OUTSIDE_SUBNET)),
            server_addresses=SERVER_ADDRESSES,
            resolver=RESOLVER_ADDRESS,
            state_dir=STATE_ROOT / name,
        )

    def namespace(self, side: Side) -> str:
        """The network namespace (``ip netns`` name) of ``side``."""
        return namespace_name(self.name, side)

    @property
    def namespaces(self) -> tuple[str, str, str]:
        """Inside, border and outside namespace names."""
        return (self.namespace(Side.INSIDE), self.namespace(Side.BORDER),
                self.namespace(Side.OUTSIDE))

    @property
    def client_address(self) -> ipaddress.IPv4Address:
        """The users' address in the inside namespace."""
        return self.client.address.ip

    @property
    def inside_subnet(self) -> ipaddress.IPv4Network:
        """The users' subnet."""
        return self.client.address.network

    @property
    def outside_subnet(self) -> ipaddress.IPv4Network:
        """The servers' subnet."""
        return self.server.address.network

    @property
    def ca_file(self) -> Path:
        """The lab CA's certificate (PEM), for clients that do not read the namespace's store.

        In-process Python code: ``ssl.create_default_context(cafile=network.ca_file)``.
        """
        return self.state_dir / "ca.pem"

    def etc_dir(self, side: Side) -> Path:
        """Files that ``ip netns exec`` shows in place of /etc's for ``side``."""
        return NETNS_ETC / self.namespace(side)


def namespace_name(name: str, side: Side) -> str:
    """``noisewall-NAME-SIDE``."""
    return f"{NAMESPACE_PREFIX}{name}-{side.value}"


def _interface(address: ipaddress.IPv4Address,
               subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{address}/{subnet.prefixlen}")
