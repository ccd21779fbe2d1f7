"""What every tunnel transport provides, and the quiet refusal the non-TLS ones share.

A transport turns a fresh TCP connection into the :class:`ByteStream` the
Noise session runs over (TLS, obfuscation, or nothing), chooses the Noise
settings that shape the first bytes on the wire, says whether its own
encryption can carry the data (a channel binding), and decides what a
refused peer sees. Everything else (authentication, the mux) is common.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from abc import ABC, abstractmethod

from noisewall.noise.dh import KeyPair
from noisewall.noise.settings import NoiseSettings
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.channel import READ_CHUNK, ByteStream

#: A refused peer's bytes are read up to a random amount in this range, then the connection closes.
REFUSE_READ_MIN = 1024
REFUSE_READ_MAX = 8192


class Transport(ABC):
    """One way of carrying the tunnel's Noise session on the wire."""

    name: str

    @abstractmethod
    def client_settings(self, static: KeyPair, server_key: bytes) -> NoiseSettings:
        """The client's Noise settings for a server with public key ``server_key``."""

    @abstractmethod
    def server_settings(self, static: KeyPair) -> NoiseSettings:
        """The server's Noise settings."""

    @abstractmethod
    async def wrap_client(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """Client side: the byte stream over a fresh TCP connection to the server."""

    @abstractmethod
    async def wrap_server(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """Server side: the byte stream over an accepted TCP connection."""

    def channel_binding(self, stream: ByteStream) -> bytes | None:
        """A value unique to this connection's encryption layer, or None if it has none.

        With a binding the Noise handshake carries it both ways and the mux
        then runs on the transport without a second AEAD (see
        :class:`~noisewall.tunnel.channel.BoundChannel`).
        """
        return None

    @abstractmethod
    async def refuse(self, stream: ByteStream, first_bytes: bytes, linger: float) -> None:
        """Answer a peer that is not an authorised client, then close; never fingerprint."""


async def refuse_quietly(stream: ByteStream, first_bytes: bytes, linger: float) -> None:
    """Read a random, bounded number of bytes (or until ``linger`` s pass), then close.

    Like obfs4: the server never answers a stranger, and the point at which
    it hangs up does not depend on anything the stranger sent.
    """
    budget = REFUSE_READ_MIN + secrets.randbelow(REFUSE_READ_MAX - REFUSE_READ_MIN + 1)
    budget -= len(first_bytes)
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(linger):
            while budget > 0:
                data = await stream.read(min(budget, READ_CHUNK))
                if not data:
                    break
                budget -= len(data)
    stream.close()
