"""The arms race, measured: how many fresh tunnel connections a censor lets through.

:func:`measure_blocking` opens ``connections`` new tunnel sessions (each a
new TCP connection, handshake and one mux PING round trip) towards the
tunnel server's address as the client sees it, typically a censor's route,
and counts the ones that fail. Because the GFW's residual blocking keys on
(client IP, server IP, server port), each attempt can come from its own
loopback address (:func:`loopback_sources`) so one hit does not block the
next attempts: the fraction then measures the censor's per-flow decision.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from noisewall.tunnel.client import TunnelUnavailable, open_session
from noisewall.tunnel.config import TunnelClientConfig, build_transport


@dataclass(frozen=True)
class BlockingResult:
    """How many of ``attempted`` fresh tunnel connections failed, and how."""

    transport: str
    attempted: int
    blocked: int
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Blocked / attempted."""
        return self.blocked / self.attempted if self.attempted else 0.0

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"transport": self.transport, "attempted": self.attempted,
                "blocked": self.blocked, "fraction": round(self.fraction, 4),
                "failures": dict(self.failures)}


def loopback_sources(count: int, first: str = "127.1.0.1") -> list[str]:
    """``count`` distinct loopback source addresses from ``first`` on (Linux routes 127/8)."""
    start = ipaddress.IPv4Address(first)
    network = ipaddress.IPv4Network("127.0.0.0/8")
    addresses = [str(start + offset) for offset in range(count)]
    if ipaddress.IPv4Address(addresses[-1]) not in network or start not in network:
        raise ValueError("source addresses must stay inside 127.0.0.0/8")
    return addresses


def _failure_kind(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, TimeoutError) or "timed out" in text:
        return "timeout"
    if "Reset" in text or isinstance(exc, ConnectionResetError):
        return "reset"
    if "Refused" in text or isinstance(exc, ConnectionRefusedError):
        return "refused"
    return "closed"


async def measure_blocking(
    config: TunnelClientConfig,
    connections: int,
    timeout: float,
    *,
    sources: Sequence[str] | None = None,
    concurrency: int = 32,
) -> BlockingResult:
    """Open ``connections`` fresh sessions to ``config``'s server; count the blocked ones.

    An attempt succeeds when the handshake completes and a PING comes back
    within ``timeout`` seconds; anything else (a drop that times out, a
    reset, a close) counts as blocked, by kind in ``failures``. Attempt
    ``i`` connects from ``sources[i % len(sources)]`` when given.
    """
    if connections <= 0:
        raise ValueError("connections must be positive")
    transport = build_transport(config.transport, config.sni, config.alpn)
    attempt_config = config.model_copy(update={"connect_timeout": timeout})
    gate = asyncio.Semaphore(concurrency)
    failures: Counter[str] = Counter()

    async def attempt(index: int) -> None:
        source = sources[index % len(sources)] if sources else None
        async with gate:
            try:
                session = await open_session(attempt_config, transport, source)
            except TunnelUnavailable as exc:
                failures[_failure_kind(exc)] += 1
                return
            try:
                await session.ping(timeout)
            except (TimeoutError, ConnectionError, OSError) as exc:
                failures[_failure_kind(exc)] += 1
            finally:
                await session.close()

    await asyncio.gather(*(attempt(i) for i in range(connections)))
    return BlockingResult(config.transport, connections, sum(failures.values()), dict(failures))
