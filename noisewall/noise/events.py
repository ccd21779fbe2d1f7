"""Events a sans-IO Noise connection reports from :meth:`receive_data`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HandshakePayload:
    """A non-empty payload carried by a handshake message from the peer."""

    body: bytes


@dataclass(frozen=True)
class HandshakeComplete:
    """The handshake finished; transport messages may flow."""

    protocol_name: str
    handshake_hash: bytes
    remote_static: bytes | None


@dataclass(frozen=True)
class MessageReceived:
    """One transport message body from the peer."""

    body: bytes


@dataclass(frozen=True)
class ProtocolSwitched:
    """The NoiseSocket responder switched or requested a retry with another protocol."""

    protocol_name: str
    retry: bool


@dataclass(frozen=True)
class PeerClosed:
    """The peer closed its side of the stream at a frame boundary."""


Event = HandshakePayload | HandshakeComplete | MessageReceived | ProtocolSwitched | PeerClosed
