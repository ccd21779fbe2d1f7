"""The client's chat connection: Noise Pipes to the server, requests and pushed messages."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, TypeVar

from noisewall.cancellation import cancel_and_wait
from noisewall.messenger import fragments, messages, wire
from noisewall.messenger.messages import Closed, Reply, Request
from noisewall.messenger.pipes import client_settings
from noisewall.noise import ConnectionClosedError, KeyPair, NoiseError
from noisewall.noise.stream import Framing, NoiseStream, connect
from noisewall.records.endpoint import Endpoint


class ChatError(Exception):
    """The server answered a request with an error; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


ReplyT = TypeVar("ReplyT", bound=Reply)

#: What :meth:`ChatConnection.request` sends: a typed request, or a raw JSON object
#: (for tests and tools that must send what the typed requests cannot express).
Outgoing = Request | dict[str, Any]


def _as_wire(message: Outgoing) -> dict[str, Any]:
    return message if isinstance(message, dict) else message.to_wire()


class ChatConnection:
    """One authenticated connection to the chat server.

    Replies are matched to requests by id; pushed ``message`` objects wait in
    :attr:`pushes` (as checked JSON objects; :func:`messages.parse_push` types
    them) until the application takes them.
    """

    def __init__(self, stream: NoiseStream) -> None:
        self.stream = stream
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._send_lock = asyncio.Lock()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, host: str, port: int, static: KeyPair, server_key: bytes | None,
                   *, framing: Framing = "noisesocket", timeout: float = 10.0,
                   socks5: Endpoint | None = None) -> ChatConnection:
        """Connect (through a SOCKS5 proxy if given) and authenticate with Noise Pipes."""
        stream = await connect(host, port, client_settings(static, server_key, framing),
                               framing=framing, timeout=timeout, socks5=socks5)
        return cls(stream)

    @property
    def server_key(self) -> bytes | None:
        """The server's static key as this handshake proved it (cache it for IK)."""
        return self.stream.remote_static

    async def _read(self) -> None:
        failure: BaseException = ConnectionClosedError("the server closed the connection")
        try:
            async for data in fragments.receive(self.stream):
                message = wire.decode(data)
                request_id = message.get("id")
                waiter = (
                    self._waiting.pop(request_id, None) if isinstance(request_id, int) else None
                )
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
                elif message.get("type") == messages.Message.TYPE:
                    messages.parse_push(message)  # a malformed push ends the connection
                    await self.pushes.put(message)
        except (NoiseError, wire.WireError, ConnectionError, OSError) as exc:
            failure = exc
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(failure)
        self._waiting.clear()
        await self.pushes.put(Closed(str(failure)).to_wire())

    async def call(self, request: Request, expect: type[ReplyT],
                   timeout: float = 10.0) -> ReplyT:
        """Send a typed request and return its typed reply (``expect``, else ``bad_reply``)."""
        reply = messages.parse_reply(await self.request(request, timeout))
        if not isinstance(reply, expect):
            raise ChatError("bad_reply", f"{request.TYPE!r} answered with {reply.TYPE!r}")
        return reply

    async def request(self, message: Outgoing, timeout: float = 10.0) -> dict[str, Any]:
        """Send a request and wait for its reply; server errors raise :class:`ChatError`."""
        request_id = next(self._ids)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        await self.notify({**_as_wire(message), "id": request_id})
        try:
            # Not asyncio.wait_for: on 3.11 it returns a reply that lands together with a
            # cancellation of the caller and drops the cancellation.
            async with asyncio.timeout(timeout):
                reply = await waiter
        finally:
            self._waiting.pop(request_id, None)
        if reply.get("type") == messages.Error.TYPE:
            raise ChatError(str(reply.get("code")), str(reply.get("message")))
        return reply

    async def notify(self, message: Outgoing) -> None:
        """Send a message that gets no reply (e.g. ``delivered``)."""
        async with self._send_lock:
            await fragments.send(self.stream, wire.encode(_as_wire(message)))

    async def close(self) -> None:
        """Close the connection."""
        await cancel_and_wait(self._reader)
        await self.stream.close()

    async def __aenter__(self) -> ChatConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
