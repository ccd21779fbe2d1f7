"""The lab's tunnels: one server per transport behind the censor, one client (SOCKS5 entry) each.

Each tunnel server listens on :data:`~noisewall.lab.services.TUNNEL_HOST` and
may only reach the messenger's addresses. Its client reaches it through a
censored route, so the censor sees and judges every tunnel connection. The
client reconnects at the start of every round (:meth:`LabTunnel.reconnect`),
as a VPN app does when it is reopened: the censor's decision is taken per
connection, so a long-lived session opened before a rule starts would
otherwise never meet it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from noisewall.lab.services import CENSOR_HOST, CHAT_HOST, MEDIA_HOST, TUNNEL_HOST, LabServices
from noisewall.noise import dh_function
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import TransportName
from noisewall.tunnel.armsrace import BlockingResult, loopback_sources, measure_blocking
from noisewall.tunnel.client import TunnelClient, TunnelUnavailable
from noisewall.tunnel.config import TunnelClientConfig, TunnelServerConfig
from noisewall.tunnel.server import TunnelServer

__all__ = ["LabTunnel", "start_tunnel"]


@dataclass
class LabTunnel:
    """A running tunnel of one transport: its client's config and SOCKS5 entry."""

    transport: str
    client: TunnelClient
    config: TunnelClientConfig

    @property
    def socks(self) -> Endpoint:
        """The SOCKS5 entry probes use."""
        host, port = self.client.socks_address
        return Endpoint(host, port)

    async def reconnect(self, background: int = 0, background_timeout: float = 0.3) -> None:
        """Drop the tunnel session and open a new one, after ``background`` other connections.

        The background connections stand for the user's other traffic through
        the same server port: one after the other, until one fails (a
        censor's residual blocking then covers the rest of this simulated
        moment).
        """
        socks = self.socks
        await self.client.close()
        self.config = self.config.model_copy(update={"socks_port": socks.port})
        self.client = TunnelClient(self.config)
        await self.client.start()
        for _ in range(background):
            if (await measure_blocking(self.config, 1, background_timeout)).blocked:
                return
        with contextlib.suppress(TunnelUnavailable):
            # Connect now, outside the probes' timers: a blocked tunnel fails again for them.
            await self.client.session()

    async def close(self) -> None:
        """Stop the client."""
        await self.client.close()

    async def arms_race(self, connections: int, timeout: float) -> BlockingResult:
        """Fresh connections through the censor, each from its own loopback address."""
        return await measure_blocking(self.config, connections, timeout,
                                      sources=loopback_sources(connections))


async def start_tunnel(services: LabServices, transport: TransportName,
                       timeout: float) -> LabTunnel:
    """A tunnel server and client for ``transport``, stopped with ``services``."""
    dh = dh_function("25519")
    server_key, client_key = dh.generate_keypair(), dh.generate_keypair()
    server = TunnelServer(TunnelServerConfig.model_validate({
        "static": server_key, "transport": transport, "listen_host": TUNNEL_HOST,
        "clients": [client_key.public], "allow": [f"{CHAT_HOST}/32", f"{MEDIA_HOST}/32"],
        "handshake_timeout": timeout, "connect_timeout": timeout, "refuse_linger": timeout}))
    await services.enter(server)
    host, port = server.address
    entry = await services.route(Endpoint(host, port))
    config = TunnelClientConfig.model_validate({
        "static": client_key, "server_host": entry.host, "server_port": entry.port,
        "server_key": server_key.public, "transport": transport, "socks_host": CENSOR_HOST,
        "socks_port": 0, "connect_timeout": timeout})
    tunnel = LabTunnel(transport, TunnelClient(config), config)
    await tunnel.client.start()
    services.on_close(tunnel.close)
    return tunnel
