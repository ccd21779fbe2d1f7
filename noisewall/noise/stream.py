"""asyncio adapter: an encrypted, framed message stream over TCP.

The sans-IO connection does all protocol work; this module only moves bytes.
A message is one transport body, exactly as the framing's spec frames it (at
most ``connection.max_body`` bytes): nothing of noisewall's own is added, so
any NoiseSocket (or WA) peer reads it. Applications that need larger messages
layer their own fragmentation on top, as the messenger does
(:mod:`noisewall.messenger.fragments`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from noisewall import socks5 as socks5_client
from noisewall.noise.connection import NoiseConnection
from noisewall.noise.errors import (
    ConnectionClosedError,
    DecryptError,
    FramingError,
    MessageTooLongError,
    NegotiationError,
    NoiseError,
)
from noisewall.noise.events import Event, HandshakePayload, MessageReceived, PeerClosed
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.wa import WAConnection
from noisewall.records.endpoint import Endpoint
from noisewall.serving import ConnectionServer

log = logging.getLogger("noisewall.noise")

Framing = Literal["noisesocket", "wa"]
FRAMINGS: tuple[Framing, ...] = ("noisesocket", "wa")
READ_CHUNK = 65536


def make_connection(framing: Framing, initiator: bool, settings: NoiseSettings) -> NoiseConnection:
    """A sans-IO connection of the chosen framing."""
    if framing == "noisesocket":
        return NoiseSocketConnection(initiator, settings)
    if framing == "wa":
        return WAConnection(initiator, settings)
    raise ValueError(f"unknown framing {framing!r} (choose from {', '.join(FRAMINGS)})")


class NoiseStream:
    """An authenticated, encrypted message stream (use :func:`connect` or :func:`serve`).

    ``remote_static`` is the peer's static key as the handshake proved it;
    authenticate the peer by comparing it with the key you expect.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: NoiseConnection,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.connection = connection
        self.handshake_payloads: list[bytes] = []
        self._pending: deque[Event] = deque()
        self._eof = False
        self._write_scheduled = False

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, authenticated by the handshake."""
        return self.connection.remote_static

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash, for channel binding."""
        return self.connection.handshake_hash

    @property
    def protocol_name(self) -> str | None:
        """The Noise protocol the handshake settled on."""
        return self.connection.protocol_name

    @property
    def peername(self) -> object:
        """The peer's socket address."""
        return self._writer.get_extra_info("peername")

    @property
    def peer_closed(self) -> bool:
        """True once the peer ended its side cleanly (a FIN at a frame boundary)."""
        return self._eof

    async def _flush(self) -> None:
        data = self.connection.take_outgoing()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    def _write_out(self) -> None:
        self._write_scheduled = False
        data = self.connection.take_outgoing()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def _feed(self, timeout: float | None) -> None:
        async with asyncio.timeout(timeout):
            data = await self._reader.read(READ_CHUNK)
        self._pending.extend(self.connection.receive_data(data))
        await self._flush()

    async def handshake(self, payload: bytes = b"", timeout: float | None = 10.0) -> None:
        """Run the handshake to completion (``payload`` rides in our first message)."""
        async with asyncio.timeout(timeout):
            first = payload
            while not self.connection.handshake_complete:
                if self.connection.needs_write:
                    self._pending.extend(self.connection.send_handshake(first))
                    first = b""
                    await self._flush()
                    continue
                await self._feed(None)
                if self.connection.must_close:
                    raise NegotiationError("handshake refused: the peer's protocol is not accepted")
        # Keep handshake payloads aside; transport events wait for receive().
        remaining: deque[Event] = deque()
        for event in self._pending:
            if isinstance(event, HandshakePayload):
                self.handshake_payloads.append(event.body)
            elif isinstance(event, MessageReceived | PeerClosed):
                remaining.append(event)
        self._pending = remaining

    @property
    def max_message_size(self) -> int:
        """The largest message :meth:`send` takes: one transport body."""
        return self.connection.max_body

    async def send(self, message: bytes) -> None:
        """Send one message as one transport body (at most :attr:`max_message_size` bytes).

        Raises :class:`MessageTooLongError` for a larger one.
        """
        self.connection.send_message(message)
        # Messages sent in the same event-loop turn (pipelined requests, a
        # group of replies) leave in one write: one system call, not one each.
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_out)
        await self._writer.drain()  # backpressure, and an error if the peer is gone

    async def receive(self, timeout: float | None = None) -> bytes:
        """The next message (one transport body); raises :class:`ConnectionClosedError` at EOF."""
        async with asyncio.timeout(timeout):
            while True:
                while self._pending:
                    event = self._pending.popleft()
                    if isinstance(event, MessageReceived):
                        return event.body
                    if isinstance(event, PeerClosed):
                        self._eof = True
                if self._eof:
                    raise ConnectionClosedError("the peer closed the stream")
                await self._feed(None)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield messages until the peer closes the stream cleanly."""
        while True:
            try:
                yield await self.receive()
            except ConnectionClosedError:
                if self._eof:
                    return
                raise

    async def write_eof(self) -> None:
        """Half-close: tell the peer we send nothing more, keep receiving."""
        self._write_out()
        if self._writer.can_write_eof():
            self._writer.write_eof()
        await self._writer.drain()

    async def close(self) -> None:
        """Close the connection and wait until the socket is closed."""
        self._write_out()
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> NoiseStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect(
    host: str,
    port: int,
    settings: NoiseSettings,
    *,
    framing: Framing = "noisesocket",
    payload: bytes = b"",
    timeout: float | None = 10.0,
    socks5: Endpoint | None = None,
) -> NoiseStream:
    """Open a TCP connection (through a SOCKS5 proxy if given) and handshake as initiator."""
    async with asyncio.timeout(timeout):
        if socks5 is not None:
            reader, writer = await socks5_client.open_connection(socks5, host, port)
        else:
            reader, writer = await asyncio.open_connection(host, port)
    stream = NoiseStream(reader, writer, make_connection(framing, True, settings))
    try:
        await stream.handshake(payload, timeout)
    except BaseException:
        await stream.close()
        raise
    return stream


Handler = Callable[[NoiseStream], Awaitable[None]]
#: Told why each connection of a server ended: the peer's address and one line of reason.
CloseReporter = Callable[[object, str], None]


def close_reason(error: BaseException | None, stream: NoiseStream) -> str:
    """One line saying why a served connection ended (never keys or plaintext)."""
    if error is None:
        return "the peer closed the connection" if stream.peer_closed else "session finished"
    detail = f"{type(error).__name__}: {error}"
    if isinstance(error, TimeoutError):
        stage = "the handshake" if not stream.connection.handshake_complete else "the session"
        return f"{stage} timed out"
    if isinstance(error, ConnectionError | OSError):
        return f"connection lost: {type(error).__name__}"
    if not stream.connection.handshake_complete:
        return f"handshake failed: {detail}"
    if isinstance(error, DecryptError):
        return f"decrypt failed: {detail}"
    if isinstance(error, FramingError | MessageTooLongError):
        return f"malformed body: {detail}"
    if isinstance(error, ConnectionClosedError):
        return f"the peer closed mid-frame: {detail}"
    return detail


def _log_close(peer: object, reason: str) -> None:
    log.info("connection from %s closed: %s", peer, reason)


class NoiseServer(ConnectionServer):
    """Listens for initiators on ``listen``; runs ``handler`` on each completed handshake.

    Use ``async with NoiseServer(...) as server`` (``server.address``); leaving
    the block also ends the live connections. A peer that sends garbage, fails
    the handshake, times out or violates the protocol later loses its own
    connection only; the server keeps serving. ``on_close`` hears why each
    connection ended (:func:`close_reason`); by default it goes to the
    ``noisewall.noise`` log. With ``max_connections``, a connection accepted
    while that many are open is closed at once, before it costs a handshake
    (``on_close`` hears ``refused: ...``), so a crowd of idle peers cannot take
    every file descriptor.
    """

    def __init__(
        self,
        handler: Handler,
        listen: Endpoint,
        settings: NoiseSettings,
        *,
        framing: Framing = "noisesocket",
        handshake_timeout: float | None = 10.0,
        on_close: CloseReporter = _log_close,
        max_connections: int | None = None,
    ) -> None:
        super().__init__(listen)
        self._handler = handler
        self._settings = settings
        self._framing: Framing = framing
        self._handshake_timeout = handshake_timeout
        self._on_close = on_close
        self._max_connections = max_connections

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._on_connection, self.listen.host, self.listen.port)

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        if self._max_connections is not None and self.connections >= self._max_connections:
            peer = writer.get_extra_info("peername")
            writer.close()
            self._on_close(peer, f"refused: {self._max_connections} connections open (the cap)")
            return
        task = asyncio.current_task()
        assert task is not None
        self._track(task)
        stream = NoiseStream(reader, writer, make_connection(self._framing, False, self._settings))
        peer = stream.peername
        error: BaseException | None = None
        try:
            await stream.handshake(timeout=self._handshake_timeout)
            await self._handler(stream)
        except (NoiseError, TimeoutError, ConnectionError, OSError) as exc:
            error = exc
        except asyncio.CancelledError:
            return  # the server is closing: this connection's task ends here
        except Exception as exc:
            log.exception("handler failed for connection from %s", peer)
            error = exc
        finally:
            stream._write_out()  # what the handler sent last still goes out
            writer.close()
        self._on_close(peer, close_reason(error, stream))
