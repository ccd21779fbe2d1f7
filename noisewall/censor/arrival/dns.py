"""DNS queries from the users, redirected to the censor in the path (UDP port 53).

Each query is a flow of its own to the lab resolver (transport ``udp``,
protocol ``dns``, the queried name as ``query``): the censor decides on it
and logs it like any flow. ``dns`` forges the answer
(:mod:`noisewall.censor.dnsforge`); ``drop``, ``reset`` and a failing
``flaky`` answer nothing (the client times out); ``delay`` forwards late;
every other effect forwards the query to the resolver and its answer back.
The nftables redirect rewrites the answer's source back to the resolver's
address, so the client sees only the resolver.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

from noisewall.cancellation import cancel_and_wait
from noisewall.censor import dnsforge
from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.policy import Decision
from noisewall.records.endpoint import Endpoint

log = logging.getLogger("noisewall.censor")

#: Seconds to wait for the resolver's answer.
RESOLVER_TIMEOUT = 3.0
_MAX_DATAGRAM = 65535


class DnsForger(asyncio.DatagramProtocol):
    """Answers redirected DNS queries as the policy decides (``decide`` decides and logs)."""

    def __init__(self, resolver: Endpoint, decide: Callable[[FlowRecord], Decision]) -> None:
        self._resolver = resolver
        self._decide = decide
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket's transport."""
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Decide on one query; answer, forge or drop it."""
        asked = dnsforge.question(data)
        if asked is None:
            return  # not a query: nothing to decide on
        record = FlowRecord(Endpoint(addr[0], addr[1]), self._resolver, protocol="dns",
                            transport="udp", confidence=1.0, query=asked.name)
        decision = self._decide(record)
        effect = decision.effect
        if effect == "dns":
            self._answer(dnsforge.forge(data, decision.action.answer), addr)
        elif effect not in ("drop", "reset", "stall"):
            delay = decision.action.ms / 1000 if effect == "delay" else 0.0
            task = asyncio.get_running_loop().create_task(self._forward(data, addr, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(self, query: bytes, addr: tuple[str, int], delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.setblocking(False)
            try:
                upstream.connect((self._resolver.host, self._resolver.port))
                await loop.sock_sendall(upstream, query)
                async with asyncio.timeout(RESOLVER_TIMEOUT):
                    answer = await loop.sock_recv(upstream, _MAX_DATAGRAM)
            except (OSError, TimeoutError) as exc:
                log.info("dns: no answer from %s: %s", self._resolver, exc)
                return
        self._answer(answer, addr)

    def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    async def close(self) -> None:
        """Stop answering; wait for queries being forwarded to end."""
        if self._transport is not None:
            self._transport.close()
        await cancel_and_wait(*self._tasks, ignore=(Exception,))
