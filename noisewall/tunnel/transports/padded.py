"""``noisesocket-padded``: real NoiseSocket on plain TCP, shaped to be exempt from the
fully-encrypted rule (Wu et al., USENIX Security 2023; see
``noisewall/censor/classify/fully_encrypted.py``).

The rule judges only the first client packet, which here is one NoiseSocket
initial frame: ``u16 negotiation length | negotiation data | u16 length |
Noise IK message 1``. The negotiation data is printable ASCII: the Noise
protocol name and a space, followed by a per-server token (lowercase base32
of SHA-256 chains over the server's public key, so no constant string marks
every deployment) long enough that printable bytes are more than half of the
packet. That makes the packet exempt twice over:

* Ex3: more than 50% of the bytes are printable;
* Ex4: far more than 20 contiguous printable bytes.

Every encrypted body (handshake payloads and transport messages) is padded
to a multiple of :data:`PADDING` bytes, so small messages do not show their
length. This transport is still NoiseSocket: a censor that classifies
NoiseSocket by structure (as China's did in 2017) still sees it.
"""

from __future__ import annotations

import base64
import hashlib

from noisewall.noise.ciphers import TAGLEN
from noisewall.noise.dh import KeyPair
from noisewall.noise.noisesocket import BODY_LEN_SIZE
from noisewall.noise.settings import NoiseSettings
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.channel import NOISE_PROTOCOL, ByteStream, client_settings, server_settings
from noisewall.tunnel.transports.base import Transport, refuse_quietly

PADDING = 128
_DHLEN = 32
#: IK message 1: e, encrypted s, then an encrypted payload of one padding block.
FIRST_MESSAGE_LEN = _DHLEN + (_DHLEN + TAGLEN) + (BODY_LEN_SIZE + PADDING + TAGLEN)
#: Margin so printable bytes stay a clear majority of the first packet.
_MARGIN = 16


def negotiation_data(server_key: bytes) -> bytes:
    """The printable negotiation data for the server with public key ``server_key``."""
    frame_overhead = 4  # the two u16 length fields
    size = frame_overhead + FIRST_MESSAGE_LEN + _MARGIN
    text = NOISE_PROTOCOL.encode("ascii") + b" "
    block = server_key
    while len(text) < size:
        block = hashlib.sha256(block).digest()
        text += base64.b32encode(block).rstrip(b"=").lower()
    return text[:size]


class PaddedNoiseSocketTransport(Transport):
    """NoiseSocket with printable negotiation data and padded bodies."""

    name = "noisesocket-padded"

    def client_settings(self, static: KeyPair, server_key: bytes) -> NoiseSettings:
        """IK with the per-server printable negotiation data and padding."""
        return client_settings(static, server_key, negotiation_data(server_key), PADDING)

    def server_settings(self, static: KeyPair) -> NoiseSettings:
        """The same negotiation data, derived from our own public key."""
        return server_settings(static, negotiation_data(static.public), PADDING)

    async def wrap_client(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """Plain TCP."""
        return connection

    async def wrap_server(self, connection: TcpStream, server_key: bytes) -> ByteStream:
        """Plain TCP."""
        return connection

    async def refuse(self, stream: ByteStream, first_bytes: bytes, linger: float) -> None:
        """Read a bounded random amount, then close (no NoiseSocket reject frame)."""
        await refuse_quietly(stream, first_bytes, linger)
