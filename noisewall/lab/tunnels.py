"""The lab's tunnels: one server per transport behind the censor, one client (SOCKS5 entry) each.

Each tunnel server listens on the address plan's tunnel address (outside, in a
lab network) and may only reach the messenger's addresses. Its client (inside)
reaches it across the censor (a censored route on loopback, the in-path
censor in a network), so the censor sees and judges every tunnel connection. The
client reconnects at the start of every round (:meth:`LabTunnel.reconnect`),
as a VPN app does when it is reopened: the censor's decision is taken per
connection, so a long-lived session opened before a rule starts would
otherwise never meet it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from noisewall.lab.services import LabServices
from noisewall.lab.sides import LabSides
from noisewall.net import Side
from noisewall.noise import dh_function
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import TransportName
from noisewall.tunnel.armsrace import BlockingResult, measure_blocking
from noisewall.tunnel.client import TunnelClient, TunnelUnavailable
from noisewall.tunnel.config import TunnelClientConfig, TunnelServerConfig
from noisewall.tunnel.server import TunnelServer

__all__ = ["LabTunnel", "start_tunnel"]


#: Where a tunnel client's SOCKS5 entry listens: loopback, of the namespace it runs in.
SOCKS_HOST = "127.0.0.1"


@dataclass
class LabTunnel:
    """A running tunnel of one transport: its client's config and SOCKS5 entry.

    The client lives on the inside (its loop in a lab network); every method
    runs it there.
    """

    transport: str
    client: TunnelClient
    config: TunnelClientConfig
    sides: LabSides

    @property
    def socks(self) -> Endpoint:
        """The SOCKS5 entry probes use."""
        host, port = self.client.socks_address
        return Endpoint(host, port)

    async def reconnect(self, background: int = 0) -> None:
        """Drop the tunnel session and open a new one, after ``background`` other connections.

        The background connections stand for the user's other traffic through
        the same server port, all at once as a browser's are. Each waits the
        tunnel's own connect timeout: a shorter one counted a connection that a
        busy machine merely slowed as blocked, so the round went on as if the
        censor had struck when it had not. A connection the censor hits starts
        its residual blocking, which then covers the probes of this simulated
        moment.
        """
        await self.sides.run(Side.INSIDE, self._reconnect(background))

    async def _reconnect(self, background: int) -> None:
        socks = self.socks
        await self.client.close()
        self.config = self.config.model_copy(update={"socks_port": socks.port})
        self.client = TunnelClient(self.config)
        await self.client.start()
        if background and (await measure_blocking(self.config, background,
                                                  self.config.connect_timeout)).blocked:
            return  # the probes will meet the blocking themselves
        with contextlib.suppress(TunnelUnavailable):
            # Connect now, outside the probes' timers: a blocked tunnel fails again for them.
            await self.client.session()

    async def close(self) -> None:
        """Stop the client."""
        await self.sides.run(Side.INSIDE, self.client.close())

    async def arms_race(self, connections: int, timeout: float,
                        sources: Sequence[str]) -> BlockingResult:
        """Fresh connections through the censor, each from its own source address."""
        return await self.sides.run(Side.INSIDE, measure_blocking(
            self.config, connections, timeout, sources=sources))


async def start_tunnel(services: LabServices, transport: TransportName,
                       timeout: float) -> LabTunnel:
    """A tunnel server and client for ``transport``, stopped with ``services``."""
    plan = services.plan
    dh = dh_function("25519")
    server_key, client_key = dh.generate_keypair(), dh.generate_keypair()
    server = TunnelServer(TunnelServerConfig.model_validate({
        "static": server_key, "transport": transport, "listen_host": plan.tunnel,
        "clients": [client_key.public], "allow": [f"{plan.chat}/32", f"{plan.media}/32"],
        "handshake_timeout": timeout, "connect_timeout": timeout, "refuse_linger": timeout}))
    await services.enter(server)
    entry = await services.route(server.address)
    config = TunnelClientConfig.model_validate({
        "static": client_key, "server_host": entry.host, "server_port": entry.port,
        "server_key": server_key.public, "transport": transport, "socks_host": SOCKS_HOST,
        "socks_port": 0, "connect_timeout": timeout})
    tunnel = LabTunnel(transport, TunnelClient(config), config, services.sides)
    await services.sides.run(Side.INSIDE, tunnel.client.start())
    services.on_close(tunnel.close)
    return tunnel
