"""Port routes: every connection to a listening port goes to one fixed server."""

from __future__ import annotations

from dataclasses import dataclass

from noisewall.censor.arrival import Accept, Arrival, peer_of
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream


@dataclass(frozen=True)
class Route:
    """Connections to ``listen`` are relayed to ``target``."""

    listen: Endpoint
    target: Endpoint


def route_arrivals(target: Endpoint) -> Accept:
    """Accept connections to a route: each one goes to ``target``."""
    async def accept(stream: TcpStream) -> Arrival:
        return Arrival(stream, peer_of(stream), target)
    return accept
