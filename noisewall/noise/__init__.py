"""The Noise Protocol Framework (revision 34) and its framings, sans-IO.

Start with :class:`HandshakeState` for raw Noise, :class:`NoiseSocketConnection`
or :class:`WAConnection` for a framed byte stream, and
:mod:`noisewall.noise.stream` for asyncio.
"""

from noisewall.noise.cipherstate import CipherState
from noisewall.noise.dh import DH_FUNCTIONS, KeyPair, dh_function
from noisewall.noise.errors import (
    ConnectionClosedError,
    DecryptError,
    FramingError,
    HandshakeStateError,
    InvalidKeyError,
    MessageTooLongError,
    NegotiationError,
    NoiseError,
    NonceExhaustedError,
    PatternError,
    ProtocolNameError,
    RejectedError,
)
from noisewall.noise.events import (
    Event,
    HandshakeComplete,
    HandshakePayload,
    MessageReceived,
    PeerClosed,
    ProtocolSwitched,
)
from noisewall.noise.handshakestate import HandshakeState, Transport
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.protocol import NoiseProtocol, parse_protocol_name
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.symmetricstate import SymmetricState
from noisewall.noise.wa import WAConnection

__all__ = [
    "DH_FUNCTIONS",
    "CipherState",
    "ConnectionClosedError",
    "DecryptError",
    "Event",
    "FramingError",
    "HandshakeComplete",
    "HandshakePayload",
    "HandshakeState",
    "HandshakeStateError",
    "InvalidKeyError",
    "KeyPair",
    "MessageReceived",
    "MessageTooLongError",
    "NegotiationError",
    "NoiseError",
    "NoiseProtocol",
    "NoiseSettings",
    "NoiseSocketConnection",
    "NonceExhaustedError",
    "PatternError",
    "PeerClosed",
    "ProtocolNameError",
    "ProtocolSwitched",
    "RejectedError",
    "SymmetricState",
    "Transport",
    "WAConnection",
    "dh_function",
    "parse_protocol_name",
]
