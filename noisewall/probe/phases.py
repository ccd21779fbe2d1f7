"""The steps every feature measurement is made of, each bounded, timed and named.

A step that fails raises :class:`PhaseFailure` carrying the OONI failure
string and the phase it happened in; the feature's measurement records it
and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable

from noisewall import socks5 as socks5_client
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.pipes import client_settings
from noisewall.noise import KeyPair
from noisewall.noise.stream import Framing, NoiseStream, make_connection
from noisewall.probe.failures import failure_string
from noisewall.probe.measurement import NOISE_PROTOCOL, Trace
from noisewall.records.endpoint import Endpoint
from noisewall.records.measurement import FeatureResult, Phase


class PhaseFailure(Exception):
    """A measurement step failed; ``failure`` is OONI's name for why."""

    def __init__(self, phase: Phase, failure: str) -> None:
        super().__init__(f"{phase}: {failure}")
        self.phase: Phase = phase
        self.failure = failure


def failure_of(exc: BaseException) -> str:
    """OONI's name for the failure behind ``exc`` (a :class:`PhaseFailure` already has one)."""
    return exc.failure if isinstance(exc, PhaseFailure) else failure_string(exc)


async def measure(run: Awaitable[None], result: FeatureResult) -> FeatureResult:
    """Run a probe body; its failure (named, with the phase) goes into ``result``."""
    started = time.monotonic()
    try:
        await run
    except PhaseFailure as exc:
        result.fail(exc.failure, exc.phase)
    finally:
        result.runtime = time.monotonic() - started
    return result


@contextlib.asynccontextmanager
async def phase(name: Phase, timeout: float) -> AsyncIterator[None]:
    """Run a step within ``timeout`` seconds; any error becomes a :class:`PhaseFailure`."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except PhaseFailure:
        raise
    except Exception as exc:
        raise PhaseFailure(name, failure_string(exc)) from exc


async def open_path(target: Endpoint, socks5: Endpoint | None, trace: Trace, *, tid: int,
                    tags: list[str], timeout: float
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP stream to ``target``, through the SOCKS5 proxy if given; logged as a connect."""
    host, port = target
    t0 = trace.now()
    try:
        async with asyncio.timeout(timeout):
            if socks5 is not None:
                streams = await socks5_client.open_connection(socks5, host, port)
            else:
                streams = await asyncio.open_connection(host, port)
    except Exception as exc:
        failure = failure_string(exc)
        trace.connect(host, port, t0=t0, failure=failure, tid=tid, tags=tags)
        failed_in: Phase = "socks5" if isinstance(exc, socks5_client.Socks5Error) else "tcp_connect"
        raise PhaseFailure(failed_in, failure) from exc
    trace.connect(host, port, t0=t0, failure=None, tid=tid, tags=tags)
    return streams


#: Seconds :func:`close_writer` waits for a closed stream's socket to go away.
CLOSE_WAIT_S = 1.0


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream without caring how the other side went away."""
    writer.close()
    with contextlib.suppress(OSError, ConnectionError, TimeoutError):
        async with asyncio.timeout(CLOSE_WAIT_S):
            await writer.wait_closed()


async def open_chat(target: Endpoint, socks5: Endpoint | None, trace: Trace, *, static: KeyPair,
                    server_key: bytes | None, framing: Framing, tags: list[str],
                    connect_timeout: float, handshake_timeout: float,
                    result: FeatureResult) -> ChatConnection:
    """An authenticated chat connection; the connect and handshake times go into ``result``.

    Opens the path and runs Noise Pipes as separate, separately timed steps
    (``ChatConnection.open`` does both at once).
    """
    tid = trace.transaction()
    t0 = trace.now()
    reader, writer = await open_path(target, socks5, trace, tid=tid, tags=tags,
                                     timeout=connect_timeout)
    result.t_connect = trace.now() - t0
    stream = NoiseStream(reader, writer,
                         make_connection(framing, True, client_settings(static, server_key,
                                                                        framing)))
    address = f"{target[0]}:{target[1]}"
    t1 = trace.now()
    try:
        async with phase("noise_handshake", handshake_timeout):
            await stream.handshake()
    except PhaseFailure as exc:
        trace.noise_handshake(address, protocol=NOISE_PROTOCOL, framing=framing, t0=t1,
                              failure=exc.failure, tags=tags)
        await stream.close()
        raise
    trace.noise_handshake(address, protocol=stream.protocol_name or NOISE_PROTOCOL,
                          framing=framing, t0=t1, failure=None, tags=tags)
    result.t_handshake = trace.now() - t1
    return ChatConnection(stream)
