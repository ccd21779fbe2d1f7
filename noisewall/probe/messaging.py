"""Probes of the chat channel: text and location (E2E message + receipt), and registration."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from noisewall.cancellation import cancel_and_wait
from noisewall.clock import Clock
from noisewall.messenger import payloads
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.messages import Ack, Delivered, Message, Register, Welcome, parse_push
from noisewall.probe.accounts import ProbeAccount, open_payload, seal, wire_size
from noisewall.probe.measurement import Trace, kbps
from noisewall.probe.phases import PhaseFailure, failure_of, measure, open_chat, phase
from noisewall.probe.settings import ProbeSettings, Vantage
from noisewall.records.measurement import FeatureResult

#: Coordinates a location probe sends (the app's ``location`` message).
PROBE_LOCATION = (39.9042, 116.4074)


@dataclass(frozen=True)
class ChatProbe:
    """What a chat-channel probe needs: where to go, as whom, and where to write it down."""

    settings: ProbeSettings
    vantage: Vantage
    account: ProbeAccount
    trace: Trace
    clock: Clock

    @property
    def tags(self) -> list[str]:
        return [self.vantage.label]

    async def connect(self, result: FeatureResult) -> ChatConnection:
        """Open and authenticate a chat connection over the vantage path, timing both steps."""
        s = self.settings
        connection = await open_chat(
            s.server, self.vantage.socks5, self.trace, static=self.account.static,
            server_key=self.account.server_key, framing=s.framing, tags=self.tags,
            connect_timeout=s.connect_timeout, handshake_timeout=s.phase_timeout,
            result=result)
        self.account.remember_server(connection)
        return connection


async def message_round_trip(probe: ChatProbe, peer: str, kind: str) -> FeatureResult:
    """``text`` (padded to the configured size) or ``location``: send, ack, delivered receipt.

    ``t_round_trip`` runs from the send to the receipt. For ``text``, a second message of
    the same size follows the first's ack at once, and the throughput is its request's
    bytes over the time to the server's ack (the bulk phase): the first has drained any
    policer's burst.
    """
    result = FeatureResult()

    async def body() -> None:
        connection = await probe.connect(result)
        try:
            await _exchange(probe, connection, peer, kind, result)
        finally:
            await connection.close()

    return await measure(body(), result)


def _payload(probe: ChatProbe, kind: str) -> dict[str, Any]:
    if kind == "location":
        lat, lon = PROBE_LOCATION
        return payloads.stamped(payloads.location(lat, lon, "noisewall probe"), probe.clock.now())
    filler = "noisewall probe "
    size = probe.settings.samples.text
    return payloads.stamped(payloads.text((filler * (size // len(filler) + 1))[:size]),
                            probe.clock.now())


async def _exchange(probe: ChatProbe, connection: ChatConnection, peer: str, kind: str,
                    result: FeatureResult) -> None:
    s = probe.settings
    payload = _payload(probe, kind)
    tid = probe.trace.transaction()
    size, t0, _ = await _timed_send(probe, connection, peer, payload, tid)
    result.bytes = size
    # A censor's token bucket lets its burst through at once: timing one small message
    # measures the burst as well as the rate (a 4 KiB text through a 32 kbit/s policer read
    # 41.6 kbit/s). The first message has drained the bucket; a second one, sent at once
    # while the first's receipt comes back (the other direction, its own bucket), crosses
    # at the policer's own rate. Its receipt is skipped like any other.
    timed = (asyncio.create_task(_timed_send(probe, connection, peer, _payload(probe, kind),
                                             tid)) if kind == "text" else None)
    try:
        t1 = probe.trace.now()
        async with phase("receipt", s.phase_timeout):
            await _receipt(probe, connection, str(payload["id"]))
        probe.trace.event("read", _address(probe), t0=t1, failure=None, tid=tid,
                          tags=probe.tags)
        result.t_round_trip = probe.trace.now() - t0
        if timed is not None:
            second, _, seconds = await timed
            result.throughput_kbps = kbps(second, seconds)
    finally:
        if timed is not None and not timed.done():
            await cancel_and_wait(timed, ignore=(PhaseFailure,))


def _address(probe: ChatProbe) -> str:
    return f"{probe.settings.server[0]}:{probe.settings.server[1]}"


async def _timed_send(probe: ChatProbe, connection: ChatConnection, peer: str,
                      payload: dict[str, Any], tid: int) -> tuple[int, float, float]:
    """Seal and send ``payload`` to ``peer``: its bytes, start and seconds to the server's ack."""
    s = probe.settings
    address = _address(probe)
    async with phase("send", s.transfer_timeout):
        request = await seal(probe.account, connection, peer, payload, s.phase_timeout)
        size = wire_size(request)
        t0 = probe.trace.now()
        try:
            await connection.call(request, Ack, s.transfer_timeout)
        except Exception as exc:
            probe.trace.event("write", address, t0=t0, failure=failure_of(exc), tid=tid,
                              tags=probe.tags, num_bytes=0)
            raise
        seconds = probe.trace.now() - t0
    probe.trace.event("write", address, t0=t0, failure=None, tid=tid, tags=probe.tags,
                      num_bytes=size)
    return size, t0, seconds


async def _receipt(probe: ChatProbe, connection: ChatConnection, msg_id: str) -> None:
    """Wait for the peer's delivered receipt for ``msg_id`` (others are acknowledged, skipped)."""
    while True:
        push = parse_push(await connection.pushes.get())
        if not isinstance(push, Message):
            raise EOFError("the chat connection closed before the receipt")
        payload = await open_payload(probe.account, push)
        await connection.notify(Delivered([push.queue_id]))
        if (payload is not None and payload.get("kind") == "receipt"
                and msg_id in payload.get("ids", ())):
            return


async def register(probe: ChatProbe) -> FeatureResult:
    """The registration exchange: connect, handshake, ``register`` (idempotent for the key)."""
    result = FeatureResult()

    async def body() -> None:
        connection = await probe.connect(result)
        try:
            t0 = probe.trace.now()
            async with phase("register", probe.settings.phase_timeout):
                await connection.call(Register(probe.account.name), Welcome,
                                      probe.settings.phase_timeout)
            result.t_round_trip = probe.trace.now() - t0
        finally:
            await connection.close()

    return await measure(body(), result)
