"""The authenticated Noise session inside every transport (asyncio shell over NoiseSocket).

Every tunnel transport ends in a byte stream (TLS, an obfuscated TCP
stream, plain TCP); over it runs one NoiseSocket session with
``Noise_IK``: the client knows the server's static key in advance and
proves its own in the first message. The server reads that message, checks
the client's key against its allow-list *before* it answers, and only then
writes its reply: an unknown client never sees a Noise byte from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from noisewall.noise.dh import KeyPair
from noisewall.noise.errors import NoiseError
from noisewall.noise.events import MessageReceived, PeerClosed
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.settings import NoiseSettings

NOISE_PROTOCOL = "Noise_IK_25519_AESGCM_SHA256"
EPHEMERAL_SIZE = 32
READ_CHUNK = 256 * 1024


class TunnelRefused(ConnectionError):
    """The peer is not an authorised tunnel client (or not a tunnel client at all).

    ``first_bytes`` holds what the peer sent so far (the refusal may depend on it:
    the ``tls`` transport answers an HTTP request with its cover page).
    """

    def __init__(self, reason: str, first_bytes: bytes = b"") -> None:
        super().__init__(reason)
        self.first_bytes = first_bytes


class ByteStream(Protocol):
    """The byte pipe a transport provides (a TCP, TLS or obfuscated connection)."""

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream."""
        ...

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""
        ...

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


@dataclass
class SocketStream:
    """An asyncio reader/writer pair as a :class:`ByteStream` (plain TCP or TLS)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream."""
        return await self.reader.read(size)

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""
        self.writer.write(data)

    async def drain(self) -> None:
        """Wait for the write buffer to drain."""
        await self.writer.drain()

    def close(self) -> None:
        """Close the connection (without waiting)."""
        self.writer.close()


class PrefixedStream:
    """A :class:`ByteStream` that first returns bytes already read from ``inner``."""

    def __init__(self, inner: ByteStream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def read(self, size: int) -> bytes:
        """The pushed-back prefix first, then the inner stream."""
        if self._prefix:
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return await self.inner.read(size)

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""
        self.inner.write(data)

    async def drain(self) -> None:
        """Wait for the write buffer to drain."""
        await self.inner.drain()

    def close(self) -> None:
        """Close the connection."""
        self.inner.close()


class ReplayFilter:
    """Remembers recent first-message ephemeral keys: a replayed handshake is refused.

    A censor that records a client's first message and replays it (as the
    GFW did against Shadowsocks) would otherwise get a server reply and learn
    that a tunnel listens here. Bounded to ``capacity`` keys, oldest forgotten.
    """

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def first_use(self, ephemeral: bytes) -> bool:
        """True the first time ``ephemeral`` is seen, False for a replay."""
        if ephemeral in self._seen:
            return False
        self._seen[ephemeral] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


def client_settings(static: KeyPair, server_key: bytes, negotiation: bytes | None = None,
                    padding: int = 0) -> NoiseSettings:
    """The initiator's settings: IK towards ``server_key``."""
    return NoiseSettings(protocol=NOISE_PROTOCOL, static=static, remote_static=server_key,
                         negotiation_data=negotiation, padding=padding)


def server_settings(static: KeyPair, negotiation: bytes | None = None,
                    padding: int = 0) -> NoiseSettings:
    """The responder's settings: IK only, no switch, no retry (no extra answers to probes)."""
    return NoiseSettings(protocol=NOISE_PROTOCOL, static=static,
                         negotiation_data=negotiation, padding=padding)


def initial_prefix(settings: NoiseSettings) -> bytes:
    """The bytes every client's first NoiseSocket frame starts with (length + negotiation)."""
    negotiation = settings.negotiation_data
    if negotiation is None:
        negotiation = settings.protocol.encode("ascii")
    return len(negotiation).to_bytes(2, "big") + negotiation


def key_allowed(key: bytes | None, allowed: Iterable[bytes]) -> bool:
    """Constant-time membership test of a client key in the allow-list."""
    if key is None:
        return False
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(key, candidate)
    return found


class NoiseChannel:
    """An established session: ordered, encrypted, authenticated bytes both ways."""

    def __init__(self, stream: ByteStream, connection: NoiseSocketConnection) -> None:
        self.stream = stream
        self.connection = connection
        self._max_body = connection.max_body

    @property
    def remote_static(self) -> bytes | None:
        """The peer's authenticated static key."""
        return self.connection.remote_static

    def write(self, data: bytes) -> None:
        """Encrypt ``data`` (in as many Noise messages as it needs) and queue it, at once.

        Synchronous on purpose: callers that write from several tasks keep
        their bytes in call order without a lock. Follow with :meth:`drain`.
        """
        view = memoryview(data)
        step = self._max_body
        for offset in range(0, len(data), step):
            self.connection.send_message(bytes(view[offset : offset + step]))
        self.stream.write(self.connection.data_to_send())

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self.stream.drain()

    async def receive(self) -> bytes:
        """The next decrypted bytes; ``b""`` when the peer closed cleanly.

        Raises :class:`NoiseError` on tampering or bad framing, and
        :class:`ConnectionError` on a dropped connection.
        """
        while True:
            data = await self.stream.read(READ_CHUNK)
            events = self.connection.receive_data(data)
            parts = [e.body for e in events if isinstance(e, MessageReceived)]
            if parts:
                return b"".join(parts)
            if not data or any(isinstance(e, PeerClosed) for e in events):
                return b""

    def close(self) -> None:
        """Close the underlying stream."""
        with contextlib.suppress(OSError, RuntimeError):
            self.stream.close()


async def initiate(stream: ByteStream, settings: NoiseSettings) -> NoiseChannel:
    """Run the client side of the handshake over ``stream`` (the caller bounds the time)."""
    connection = NoiseSocketConnection(True, settings)
    connection.send_handshake()
    stream.write(connection.data_to_send())
    await stream.drain()
    while not connection.handshake_complete:
        data = await stream.read(READ_CHUNK)
        if not data:
            raise ConnectionError("the server closed the connection during the handshake")
        connection.receive_data(data)
    return NoiseChannel(stream, connection)


async def respond(
    stream: ByteStream,
    settings: NoiseSettings,
    allowed: Iterable[bytes],
    replay: ReplayFilter | None = None,
) -> NoiseChannel:
    """Run the server side: read the client's first message, authorise, then answer.

    Raises :class:`TunnelRefused` (having sent nothing) when the first bytes
    are not our first frame, the client key is not allowed or the message is
    a replay; :class:`NoiseError` when they do not decrypt. The caller bounds
    the time and decides how a refusal looks on the wire.
    """
    prefix = initial_prefix(settings)
    seen = b""
    while len(seen) < len(prefix):
        data = await stream.read(READ_CHUNK)
        if not data:
            raise TunnelRefused("closed before a first frame", seen)
        seen += data
        # Refuse at the first byte that differs: an HTTP request or garbage is
        # answered at once, never after a wait that a prober could time.
        if seen[: len(prefix)] != prefix[: len(seen)]:
            raise TunnelRefused("not a tunnel client's first frame", seen)
    connection = NoiseSocketConnection(False, settings)
    try:
        connection.receive_data(seen)
        while not connection.needs_write:
            data = await stream.read(READ_CHUNK)
            if not data:
                raise TunnelRefused("closed inside the first frame", seen)
            seen += data
            connection.receive_data(data)
    except NoiseError as exc:
        raise TunnelRefused(f"first message invalid: {type(exc).__name__}", seen) from None
    if not key_allowed(connection.remote_static, allowed):
        raise TunnelRefused("client key not allowed", seen)
    ephemeral_at = len(prefix) + 2
    ephemeral = seen[ephemeral_at : ephemeral_at + EPHEMERAL_SIZE]
    if replay is not None and not replay.first_use(ephemeral):
        raise TunnelRefused("replayed first message", seen)
    connection.send_handshake()
    stream.write(connection.data_to_send())
    await stream.drain()
    return NoiseChannel(stream, connection)
