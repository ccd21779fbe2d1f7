"""The error types of :mod:`noisewall.noise`.

Every failure the Noise core, its framings and its stream adapter can meet is
one of these, so callers can catch :class:`NoiseError` and know they have seen
everything a hostile peer or a bad argument can cause.
"""

from __future__ import annotations

from collections.abc import Iterable


class NoiseError(Exception):
    """Base class of every error raised by :mod:`noisewall.noise`."""


class ProtocolNameError(NoiseError, ValueError):
    """A Noise protocol name is malformed or names something unsupported."""


def unsupported(kind: str, name: str, supported: Iterable[str]) -> ProtocolNameError:
    """The error for a protocol-name section naming a function noisewall lacks."""
    return ProtocolNameError(
        f"unsupported {kind} {name!r} (supported: {', '.join(supported)})"
    )


class PatternError(NoiseError, ValueError):
    """A handshake pattern or modifier is unknown or breaks the validity rules."""


class HandshakeStateError(NoiseError):
    """The handshake was used out of turn, or without the keys its pattern needs."""


class DecryptError(NoiseError):
    """Authenticated decryption failed: wrong key, tampered or truncated data."""


class InvalidKeyError(NoiseError, ValueError):
    """A key has the wrong length or a DH produced an invalid (low-order) result."""


class NonceExhaustedError(NoiseError):
    """The cipher nonce reached 2^64-1, which Noise reserves; a new handshake is needed."""


class MessageTooLongError(NoiseError, ValueError):
    """A Noise message would exceed 65535 bytes."""


class FramingError(NoiseError):
    """Bytes on the wire do not form a valid NoiseSocket or WA frame."""


class NegotiationError(NoiseError):
    """NoiseSocket negotiation failed: unknown protocol, bad negotiation data."""


class RejectedError(NegotiationError):
    """The responder explicitly rejected the handshake; ``reason`` is its message."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"handshake rejected by peer: {reason}")
        self.reason = reason


class ConnectionClosedError(NoiseError):
    """The peer closed the connection (cleanly or mid-frame)."""
