"""A client for a server in WeChat mode: messages in the clear, regions, groups, receipts.

Used by the probe and the tests. Like the E2E app, it answers every message it
receives with a ``delivered`` receipt to the sender, so a sender learns what
arrived; a message the server dropped silently is never answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noisewall.clock import Clock, SystemClock
from noisewall.messenger import payloads
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.messages import (
    Account,
    Ack,
    AddMember,
    CreateGroup,
    Delivered,
    Group,
    Link,
    Message,
    Register,
    Send,
    SendGroup,
    Welcome,
    parse_push,
)
from noisewall.noise import KeyPair
from noisewall.noise.stream import Framing
from noisewall.records.endpoint import Endpoint


@dataclass(frozen=True)
class Incoming:
    """A message received: from whom, in which group (None: one to one), the inner message."""

    sender: str
    group: str | None
    payload: dict[str, Any]


class WeChatClient:
    """One registered account's connection to a WeChat-mode server."""

    def __init__(self, connection: ChatConnection, name: str, clock: Clock | None = None) -> None:
        self.connection = connection
        self.name = name
        self.clock = clock or SystemClock()
        #: Ids of own messages the recipients confirmed (delivered receipts received).
        self.delivered: set[str] = set()

    @classmethod
    async def open(cls, host: str, port: int, static: KeyPair, name: str, region: str, *,
                   server_key: bytes | None = None, framing: Framing = "noisesocket",
                   socks5: Endpoint | None = None, timeout: float = 10.0,
                   clock: Clock | None = None) -> WeChatClient:
        """Connect and register ``name`` from ``region`` (idempotent for the same key)."""
        connection = await ChatConnection.open(host, port, static, server_key, framing=framing,
                                               timeout=timeout, socks5=socks5)
        try:
            await connection.call(Register(name, region), Welcome, timeout)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, name, clock)

    async def close(self) -> None:
        """Close the connection."""
        await self.connection.close()

    async def __aenter__(self) -> WeChatClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _stamped(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return payloads.stamped(payload, self.clock.now())

    async def send(self, to: str, payload: Mapping[str, Any], timeout: float = 10.0) -> str:
        """Send an inner message one to one; returns its id once the server says "sent"."""
        message = self._stamped(payload)
        msg_id = str(message["id"])
        await self.connection.call(Send(to, msg_id, payloads.unsealed(message)), Ack, timeout)
        return msg_id

    async def send_group(self, group: str, payload: Mapping[str, Any],
                         timeout: float = 10.0) -> str:
        """Send an inner message to every other member of ``group``; returns its id."""
        message = self._stamped(payload)
        msg_id = str(message["id"])
        await self.connection.call(SendGroup(group, msg_id, payloads.unsealed(message)), Ack,
                                   timeout)
        return msg_id

    async def create_group(self, group: str) -> list[str]:
        """Create ``group``; returns its members (this account)."""
        return (await self.connection.call(CreateGroup(group), Group)).members

    async def add_member(self, group: str, name: str) -> list[str]:
        """Add ``name`` to ``group``; returns the members."""
        return (await self.connection.call(AddMember(group, name), Group)).members

    async def link(self, region: str) -> Account:
        """Link a number from ``region``; the answer keeps the registration region."""
        return await self.connection.call(Link(region), Account)

    async def receive(self, wait: float = 1.0) -> list[Incoming]:
        """Messages that arrive within ``wait`` seconds (receipts are noted, not returned).

        Each message is acknowledged to the server and answered with a
        ``delivered`` receipt to its sender.
        """
        received: list[Incoming] = []
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    raw = await self.connection.pushes.get()
            except TimeoutError:
                break
            push = parse_push(raw)
            if not isinstance(push, Message):
                raise ConnectionError(f"the chat connection closed: {push.reason}")
            await self.connection.notify(Delivered([push.queue_id]))
            with contextlib.suppress(payloads.PayloadError):
                incoming = self._incoming(push)
                if incoming.payload["kind"] == "receipt":
                    self.delivered.update(str(i) for i in incoming.payload.get("ids", ()))
                    continue
                received.append(incoming)
                await self.send(push.sender, payloads.receipt("delivered",
                                                              [str(incoming.payload["id"])]))
        return received

    @staticmethod
    def _incoming(push: Message) -> Incoming:
        payload = payloads.open_plain(push.envelope)
        if "id" not in payload:
            raise payloads.PayloadError("an inner message without an id")
        group = push.envelope.get("group")
        return Incoming(push.sender, group if isinstance(group, str) else None, payload)
