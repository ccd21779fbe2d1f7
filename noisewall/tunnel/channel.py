"""The authenticated Noise session inside every transport (asyncio shell over NoiseSocket).

Every tunnel transport ends in a byte stream (TLS, an obfuscated TCP
stream, plain TCP); over it runs one NoiseSocket handshake with
``Noise_IK``: the client knows the server's static key in advance and
proves its own in the first message. The server reads that message, checks
the client's key against its allow-list *before* it answers, and only then
writes its reply: an unknown client never sees a Noise byte from the server.

After the handshake the mux bytes travel either as Noise transport messages
(:class:`NoiseChannel`) or, when the transport already encrypts and the
handshake was bound to it (a TLS channel binding carried in both handshake
payloads and checked in constant time), straight on the transport
(:class:`BoundChannel`): one layer of AEAD instead of two.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Iterable
from typing import Protocol

from noisewall.noise.dh import KeyPair
from noisewall.noise.errors import NoiseError
from noisewall.noise.events import Event, HandshakePayload, MessageReceived, PeerClosed
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.settings import NoiseSettings
from noisewall.tcp_stream import Buffer
from noisewall.tunnel.replay import EPHEMERAL_SIZE, ReplayFilter

NOISE_PROTOCOL = "Noise_IK_25519_AESGCM_SHA256"
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

    async def read(self, size: int) -> bytes | bytearray:
        """Up to ``size`` bytes (a buffer nobody changes afterwards); ``b""`` at end of stream."""
        ...

    def write(self, data: Buffer) -> None:
        """Queue bytes for the peer."""
        ...

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


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


class Channel(Protocol):
    """An established session: ordered, authenticated, confidential bytes both ways."""

    @property
    def remote_static(self) -> bytes | None:
        """The peer's authenticated static key."""
        ...

    def write(self, data: Buffer) -> None:
        """Queue ``data`` at once (synchronous: callers keep call order without a lock)."""
        ...

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        ...

    async def receive(self) -> bytes | bytearray:
        """The next bytes (the caller may keep views into them); ``b""`` when the peer closed."""
        ...

    def close(self) -> None:
        """Close the underlying stream."""
        ...


class BoundChannel:
    """Mux bytes straight on a transport that encrypts, after a handshake bound to it.

    Only :func:`initiate` and :func:`respond` create one, and only once both
    sides proved (inside the authenticated Noise handshake) that they see the
    same TLS session: the TLS AEAD then protects the data, once.
    """

    def __init__(self, stream: ByteStream, remote_static: bytes | None) -> None:
        self.stream = stream
        self._remote_static = remote_static

    @property
    def remote_static(self) -> bytes | None:
        """The peer's authenticated static key."""
        return self._remote_static

    def write(self, data: Buffer) -> None:
        """Queue ``data`` on the transport."""
        self.stream.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self.stream.drain()

    async def receive(self) -> bytes | bytearray:
        """The next bytes; ``b""`` when the peer closed."""
        return await self.stream.read(READ_CHUNK)

    def close(self) -> None:
        """Close the underlying stream."""
        with contextlib.suppress(OSError, RuntimeError):
            self.stream.close()


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

    def write(self, data: Buffer) -> None:
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
            data = bytes(await self.stream.read(READ_CHUNK))  # no copy: these streams give bytes
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


def handshake_frame_size(data: bytes) -> int | None:
    """Bytes of the first NoiseSocket handshake frame at the start of ``data`` (None: partial)."""
    if len(data) < 2:
        return None
    message_at = 2 + int.from_bytes(data[:2], "big")
    if len(data) < message_at + 2:
        return None
    return message_at + 2 + int.from_bytes(data[message_at : message_at + 2], "big")


def _payload(events: list[Event]) -> bytes:
    return b"".join(e.body for e in events if isinstance(e, HandshakePayload))


async def initiate(
    stream: ByteStream, settings: NoiseSettings, binding: bytes | None = None
) -> Channel:
    """Run the client side of the handshake over ``stream`` (the caller bounds the time).

    With a ``binding`` (the transport's channel binding, e.g. TLS
    ``tls-unique``) the client sends it in its first message, requires the
    server's reply to carry the same value, and returns a
    :class:`BoundChannel`; without one, a :class:`NoiseChannel`.
    """
    connection = NoiseSocketConnection(True, settings)
    connection.send_handshake(binding or b"")
    stream.write(connection.data_to_send())
    await stream.drain()
    received = b""
    events: list[Event] = []
    while not connection.handshake_complete:
        data = bytes(await stream.read(READ_CHUNK))
        if not data:
            raise ConnectionError("the server closed the connection during the handshake")
        received += data
        events += connection.receive_data(data)
    if binding is None:
        return NoiseChannel(stream, connection)
    if not hmac.compare_digest(_payload(events), binding):
        raise ConnectionError("the server's handshake is not bound to this TLS session")
    if handshake_frame_size(received) != len(received):
        raise ConnectionError("the server sent data before the handshake ended")
    return BoundChannel(stream, connection.remote_static)


async def respond(
    stream: ByteStream,
    settings: NoiseSettings,
    allowed: Iterable[bytes],
    replay: ReplayFilter | None = None,
    binding: bytes | None = None,
) -> Channel:
    """Run the server side: read the client's first message, authorise, then answer.

    Raises :class:`TunnelRefused` (having sent nothing) when the first bytes
    are not our first frame, the client key is not allowed, the message is
    a replay, or (with a ``binding``) it does not carry this TLS session's
    binding; :class:`NoiseError` when they do not decrypt. The caller bounds
    the time and decides how a refusal looks on the wire. With a binding the
    reply carries it back and the result is a :class:`BoundChannel`.
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
        events = connection.receive_data(seen)
        while not connection.needs_write:
            data = bytes(await stream.read(READ_CHUNK))
            if not data:
                raise TunnelRefused("closed inside the first frame", seen)
            seen += data
            events += connection.receive_data(data)
    except NoiseError as exc:
        raise TunnelRefused(f"first message invalid: {type(exc).__name__}", seen) from None
    if not key_allowed(connection.remote_static, allowed):
        raise TunnelRefused("client key not allowed", seen)
    ephemeral_at = len(prefix) + 2
    ephemeral = seen[ephemeral_at : ephemeral_at + EPHEMERAL_SIZE]
    if replay is not None and not replay.first_use(ephemeral):
        raise TunnelRefused("replayed first message", seen)
    if binding is not None:
        # A first message made for another TLS session (relayed by a man in
        # the middle, or replayed) is refused like a stranger's.
        if not hmac.compare_digest(_payload(events), binding):
            raise TunnelRefused("first message not bound to this TLS session", seen)
        if handshake_frame_size(seen) != len(seen):
            raise TunnelRefused("data after the first message", seen)
    connection.send_handshake(binding or b"")
    stream.write(connection.data_to_send())
    await stream.drain()
    if binding is None:
        return NoiseChannel(stream, connection)
    return BoundChannel(stream, connection.remote_static)
