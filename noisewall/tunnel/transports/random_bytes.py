"""``random``: every byte on the wire uniformly random, from the first one (like obfs4).

Raw X25519 public keys are not uniform (the top bit is always clear, and
only about half of all 32-byte strings are valid points), so the Noise
session is not sent as is. Each direction instead starts with a fresh
16-byte random nonce, and everything after it (a random-length padding
header and then the whole NoiseSocket stream, handshake included) is
XORed with a ChaCha20 keystream keyed by HKDF-SHA256(server public key,
salt = nonce). To anyone who does not know the server's public key the
stream is indistinguishable from random bytes; the server's key is shared
out of band with the client (like an obfs4 bridge line), so it is the
obfuscation secret. Elligator2 would make keys uniform without that
assumption, but no maintained Python package provides it.

The GFW's fully-encrypted rule is aimed at exactly this (it caught obfs4):
this transport is expected to be blocked at the inspected fraction.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from noisewall.noise.dh import KeyPair
from noisewall.noise.settings import NoiseSettings
from noisewall.tcp_stream import Buffer, TcpStream
from noisewall.tunnel.channel import (
    ByteStream,
    TunnelRefused,
    client_settings,
    server_settings,
)
from noisewall.tunnel.transports.base import Transport, refuse_quietly

NONCE_SIZE = 16
#: The random padding after each nonce is at most this long.
MAX_PADDING = 512
_UPSTREAM = b"noisewall tunnel random: client to server"
_DOWNSTREAM = b"noisewall tunnel random: server to client"


def _keystream(server_key: bytes, nonce: bytes, direction: bytes) -> CipherContext:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=direction).derive(server_key)
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()


class ObfuscatedStream:
    """A :class:`ByteStream` whose bytes both ways are ChaCha20 keystream-masked."""

    def __init__(self, inner: ByteStream, server_key: bytes, initiator: bool) -> None:
        self.inner = inner
        self._server_key = server_key
        self._send_label, self._receive_label = (
            (_UPSTREAM, _DOWNSTREAM) if initiator else (_DOWNSTREAM, _UPSTREAM)
        )
        self._out: CipherContext | None = None
        self._in: CipherContext | None = None
        self._buffer = b""

    def write(self, data: Buffer) -> None:
        """Mask and queue ``data``; the first write also carries the nonce and padding."""
        if self._out is None:
            nonce = secrets.token_bytes(NONCE_SIZE)
            self._out = _keystream(self._server_key, nonce, self._send_label)
            padding = secrets.randbelow(MAX_PADDING + 1)
            header = padding.to_bytes(2, "big") + bytes(padding)
            self.inner.write(nonce + self._out.update(header + data))
            return
        self.inner.write(self._out.update(data))

    async def drain(self) -> None:
        """Wait for the write buffer to drain."""
        await self.inner.drain()

    async def _raw(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = await self.inner.read(max(size - len(self._buffer), 4096))
            if not data:
                raise TunnelRefused("closed inside the obfuscation header")
            self._buffer += data
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk

    async def read(self, size: int) -> bytes:
        """Up to ``size`` unmasked bytes; ``b""`` at end of stream.

        Raises :class:`TunnelRefused` when the header is impossible (garbage).
        """
        if self._in is None:
            nonce = await self._raw(NONCE_SIZE)
            self._in = _keystream(self._server_key, nonce, self._receive_label)
            padding = int.from_bytes(self._in.update(await self._raw(2)), "big")
            if padding > MAX_PADDING:
                raise TunnelRefused("impossible padding length")
            self._in.update(await self._raw(padding))
        if self._buffer:
            chunk, self._buffer = self._buffer[:size], self._buffer[size:]
            return self._in.update(chunk)
        return self._in.update(await self.inner.read(size))

    def close(self) -> None:
        """Close the connection."""
        self.inner.close()


class RandomTransport(Transport):
    """A looks-like-nothing stream: the kind of traffic the fully-encrypted rule targets."""

    name = "random"

    def client_settings(self, static: KeyPair, server_key: bytes) -> NoiseSettings:
        """IK; the negotiation data is masked like everything else."""
        return client_settings(static, server_key)

    def server_settings(self, static: KeyPair) -> NoiseSettings:
        """IK, matching :meth:`client_settings`."""
        return server_settings(static)

    async def wrap_client(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """Mask the client's stream with keys derived from the server's public key."""
        return ObfuscatedStream(connection, server_key, initiator=True)

    async def wrap_server(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """The matching unmasking on the server."""
        return ObfuscatedStream(connection, server_key, initiator=False)

    async def refuse(self, stream: ByteStream, first_bytes: bytes, linger: float) -> None:
        """Read a bounded random amount, then close (never an answer)."""
        inner = stream.inner if isinstance(stream, ObfuscatedStream) else stream
        await refuse_quietly(inner, first_bytes, linger)
