"""Validated configuration of the tunnel's server and client, and the transport registry."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from noisewall.errors import InputError
from noisewall.noise.dh import KeyPair
from noisewall.records.names import TRANSPORT_NAMES, TransportName
from noisewall.tunnel.mux import DEFAULT_WINDOW
from noisewall.tunnel.transports.base import Transport
from noisewall.tunnel.transports.padded import PaddedNoiseSocketTransport
from noisewall.tunnel.transports.random_bytes import RandomTransport
from noisewall.tunnel.transports.tls import DEFAULT_ALPN, DEFAULT_SNI, TlsTransport

KEY_SIZE = 32


class TunnelConfigError(InputError):
    """A bad tunnel setting (a destination rule, a key)."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DestinationRule:
    """An allowed onward destination: a network and a port (None: any port)."""

    network: IPNetwork
    port: int | None

    def allows(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        """True if ``address:port`` falls under this rule."""
        return address in self.network and (self.port is None or self.port == port)

    def __str__(self) -> str:
        net = str(self.network)
        if self.port is None:
            return net
        return f"[{net}]:{self.port}" if self.network.version == 6 else f"{net}:{self.port}"


def parse_destination(text: str) -> DestinationRule:
    """``IP``, ``CIDR``, ``IP:PORT``, ``CIDR:PORT``, ``[IPv6]:PORT`` or ``[IPv6/len]:PORT``."""
    spec = text.strip()
    port_text: str | None = None
    if spec.startswith("["):
        inside, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise TunnelConfigError(f"destination {text!r}: expected [IPv6]:PORT")
        spec, port_text = inside, (rest[1:] or None)
    elif spec.count(":") == 1:
        spec, port_text = spec.split(":")
    try:
        network = ipaddress.ip_network(spec, strict=True)
    except ValueError:
        raise TunnelConfigError(
            f"destination {text!r}: not an IP address or CIDR (host names are not allowed: "
            "a name could later point anywhere)"
        ) from None
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise TunnelConfigError(f"destination {text!r}: bad port {port_text!r}")
        port = int(port_text)
    return DestinationRule(network, port)


def _check_destination(text: str) -> str:
    try:
        parse_destination(text)
    except TunnelConfigError as exc:
        raise ValueError(str(exc)) from None
    return text


def _check_key(key: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a public key is {KEY_SIZE} bytes, got {len(key)}")
    return key


PublicKey = Annotated[bytes, AfterValidator(_check_key)]
Destination = Annotated[str, AfterValidator(_check_destination)]
Port = Annotated[int, Field(ge=0, le=65535)]


class TunnelServerConfig(BaseModel):
    """The tunnel server: where it listens, whom it serves, where it may connect onward.

    ``allow`` is empty by default: nothing is reachable through the tunnel
    until the operator names it (an open proxy is a bug; loopback is not implied).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    static: KeyPair
    transport: TransportName = "tls"
    listen_host: str = "127.0.0.1"
    listen_port: Port = 0
    clients: list[PublicKey] = Field(default_factory=list)
    allow: list[Destination] = Field(default_factory=list)
    cover_sni: str = DEFAULT_SNI
    handshake_timeout: float = Field(default=10.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    #: How long a refused peer is read from at most before the server hangs up.
    refuse_linger: float = Field(default=30.0, gt=0)
    window: int = Field(default=DEFAULT_WINDOW, gt=0, lt=2**32)
    #: Where the replay filter keeps the first messages it answered, so that one recorded
    #: before a restart is refused after it (None: in memory only).
    replay_file: Path | None = None

    def destination_rules(self) -> list[DestinationRule]:
        """The parsed ``allow`` list."""
        return [parse_destination(text) for text in self.allow]


class TunnelClientConfig(BaseModel):
    """The tunnel client: the server to reach, how, and the local SOCKS5 entry."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True, extra="forbid")

    static: KeyPair
    server_host: str
    server_port: Port
    server_key: PublicKey
    transport: TransportName = "tls"
    socks_host: str = "127.0.0.1"
    socks_port: Port = 1081
    sni: str = DEFAULT_SNI
    alpn: tuple[str, ...] = DEFAULT_ALPN
    #: Local address to connect from (the lab spreads clients over 127.0.0.0/8).
    source_host: str | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    window: int = Field(default=DEFAULT_WINDOW, gt=0, lt=2**32)


def build_transport(name: TransportName, sni: str = DEFAULT_SNI,
                    alpn: tuple[str, ...] = DEFAULT_ALPN) -> Transport:
    """The transport called ``name``."""
    if name == "tls":
        return TlsTransport(sni, alpn)
    if name == "random":
        return RandomTransport()
    if name == "noisesocket-padded":
        return PaddedNoiseSocketTransport()
    choices = ", ".join(TRANSPORT_NAMES)
    raise TunnelConfigError(f"unknown transport {name!r} (choose from {choices})")
