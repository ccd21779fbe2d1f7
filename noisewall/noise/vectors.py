"""Run Noise test-vector files: cacophony/snow JSON and the NoiseSocket vector format.

Each vector is replayed through both parties with their fixed ephemeral keys;
every handshake and transport message must match the vector byte for byte,
decrypt back to its payload, and both parties must end with the vector's
handshake hash. NoiseSocket vectors go through the real
:class:`NoiseSocketConnection` state machine, padding and all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisewall.noise.errors import NoiseError, ProtocolNameError
from noisewall.noise.events import Event, HandshakePayload, MessageReceived
from noisewall.noise.handshakestate import HandshakeState
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.protocol import NoiseProtocol, parse_protocol_name
from noisewall.noise.settings import NoiseSettings


class VectorFormatError(ValueError):
    """A vector file is not valid JSON or a vector lacks a field or holds bad hex."""


class VectorMismatch(Exception):
    """A vector's expected bytes differ from what noisewall produced."""


@dataclass
class VectorFailure:
    """One vector that failed or was skipped, and why."""

    file: str
    index: int
    protocol_name: str
    reason: str


@dataclass
class VectorReport:
    """The outcome of running one or more vector files."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[VectorFailure] = field(default_factory=list)
    skips: list[VectorFailure] = field(default_factory=list)

    def merge(self, other: VectorReport) -> None:
        """Add another report's counts and details to this one."""
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.failures.extend(other.failures)
        self.skips.extend(other.skips)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` shape: counts plus each failure and skip."""
        return {
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "failures": [vars(failure) for failure in self.failures],
            "skips": [vars(skip) for skip in self.skips],
        }


class _Vector:
    """Typed access to one vector's fields, with errors that name the field."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, Mapping):
            raise VectorFormatError(f"{where}: a vector must be a JSON object")
        self.raw = raw
        self.where = where
        self.protocol_name = self.text("protocol_name")

    def text(self, key: str) -> str:
        value = self.raw.get(key)
        if not isinstance(value, str):
            raise VectorFormatError(f"{self.where}: field {key!r} must be a string")
        return value

    def hex(self, key: str, container: Mapping[str, Any] | None = None) -> bytes | None:
        source = self.raw if container is None else container
        value = source.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise VectorFormatError(f"{self.where}: field {key!r} must be a hex string")
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise VectorFormatError(f"{self.where}: field {key!r} is not valid hex") from None

    def hex_list(self, key: str) -> list[bytes]:
        values = self.raw.get(key, [])
        if not isinstance(values, list):
            raise VectorFormatError(f"{self.where}: field {key!r} must be a list")
        return [self.hex(str(i), {str(i): value}) or b"" for i, value in enumerate(values)]

    def messages(self) -> list[Mapping[str, Any]]:
        messages = self.raw.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise VectorFormatError(f"{self.where}: field 'messages' must be a list of objects")
        return messages

    def message_hex(self, message: Mapping[str, Any], key: str, index: int) -> bytes:
        value = self.hex(key, message)
        if value is None:
            raise VectorFormatError(f"{self.where}: message {index} lacks {key!r}")
        return value

    def is_noisesocket(self) -> bool:
        return any("message_body" in message for message in self.messages())


def _expect(actual: bytes, expected: bytes, what: str) -> None:
    if actual != expected:
        raise VectorMismatch(f"{what}: expected {expected.hex()}, got {actual.hex()}")


def _party(vector: _Vector, protocol: NoiseProtocol, role: str) -> dict[str, Any]:
    """The keys and prologue of one party (``init`` or ``resp``)."""
    dh = protocol.dh
    static = vector.hex(f"{role}_static")
    ephemeral = vector.hex(f"{role}_ephemeral")
    return {
        "prologue": vector.hex(f"{role}_prologue") or b"",
        "s": dh.keypair_from_private(static) if static is not None else None,
        "e": dh.keypair_from_private(ephemeral) if ephemeral is not None else None,
        "rs": vector.hex(f"{role}_remote_static"),
        "re": vector.hex(f"{role}_remote_ephemeral"),
        "psks": vector.hex_list(f"{role}_psks"),
    }


def _run_noise_vector(vector: _Vector, protocol: NoiseProtocol) -> None:
    parties = [
        HandshakeState(protocol, initiator=True, **_party(vector, protocol, "init")),
        HandshakeState(protocol, initiator=False, **_party(vector, protocol, "resp")),
    ]
    initiator, responder = parties
    for index, message in enumerate(vector.messages()):
        payload = vector.message_hex(message, "payload", index)
        expected = vector.message_hex(message, "ciphertext", index)
        if not initiator.complete:
            sender, receiver = (initiator, responder) if initiator.writes_next else parties[::-1]
            ciphertext = sender.write_message(payload)
            _expect(ciphertext, expected, f"handshake message {index}")
            _expect(receiver.read_message(ciphertext), payload, f"payload of message {index}")
            continue
        from_initiator = protocol.pattern.one_way or index % 2 == 0
        sender, receiver = (initiator, responder) if from_initiator else parties[::-1]
        send, receive = sender.transport().send, receiver.transport().receive
        if send is None or receive is None:
            raise VectorMismatch(f"message {index}: no transport cipher in that direction")
        ciphertext = send.encrypt(payload)
        _expect(ciphertext, expected, f"transport message {index}")
        _expect(receive.decrypt(ciphertext), payload, f"payload of message {index}")
    _check_hash(vector, initiator, responder)


def _check_hash(vector: _Vector, initiator: HandshakeState, responder: HandshakeState) -> None:
    expected = vector.hex("handshake_hash")
    if not (initiator.complete and responder.complete):
        raise VectorMismatch("the vector ends before the handshake completes")
    if expected is not None:
        _expect(initiator.handshake_hash, expected, "initiator handshake hash")
        _expect(responder.handshake_hash, expected, "responder handshake hash")


def _received_body(events: Sequence[Event]) -> bytes:
    for event in events:
        if isinstance(event, HandshakePayload | MessageReceived):
            return event.body
    return b""


def _run_noisesocket_vector(vector: _Vector, protocol: NoiseProtocol) -> None:
    messages = vector.messages()
    negotiation = vector.hex("negotiation_data", messages[0]) if messages else None
    connections = []
    for role in ("init", "resp"):
        party = _party(vector, protocol, role)
        settings = NoiseSettings(
            protocol=protocol.name,
            static=party["s"],
            remote_static=party["rs"],
            psks=party["psks"],
            prologue=party["prologue"],
            ephemeral=party["e"],
            negotiation_data=negotiation,
        )
        connections.append(NoiseSocketConnection(role == "init", settings))
    initiator, responder = connections
    for index, message in enumerate(messages):
        body = vector.message_hex(message, "message_body", index)
        expected = vector.message_hex(message, "message", index)
        if not initiator.handshake_complete:
            sender = initiator if initiator.needs_write else responder
        else:
            sender = initiator if index % 2 == 0 else responder
        receiver = responder if sender is initiator else initiator
        padded = message.get("padded_length", 0)
        if not isinstance(padded, int):
            raise VectorFormatError(f"{vector.where}: message {index}: bad padded_length")
        sender.settings.padding = padded
        if sender.handshake_complete:
            sender.send_message(body)
        else:
            sender.send_handshake(body)
        wire = sender.data_to_send()
        _expect(wire, expected, f"NoiseSocket message {index}")
        _expect(_received_body(receiver.receive_data(wire)), body, f"body of message {index}")
    if not (initiator.handshake_complete and responder.handshake_complete):
        raise VectorMismatch("the vector ends before the handshake completes")
    expected_hash = vector.hex("handshake_hash")
    if expected_hash is not None:
        _expect(initiator.handshake_hash, expected_hash, "initiator handshake hash")
        _expect(responder.handshake_hash, expected_hash, "responder handshake hash")


def load_vectors(path: Path) -> list[object]:
    """The raw vectors of a file (``{"vectors": [...]}`` or a bare list)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VectorFormatError(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VectorFormatError(f"{path}: not valid JSON: {exc}") from None
    vectors = data.get("vectors") if isinstance(data, dict) else data
    if not isinstance(vectors, list):
        raise VectorFormatError(f"{path}: expected an object with a 'vectors' list")
    return vectors


def run_vector_file(path: Path) -> VectorReport:
    """Run every vector in ``path``; a malformed vector raises :class:`VectorFormatError`."""
    report = VectorReport()
    for index, raw in enumerate(load_vectors(path)):
        vector = _Vector(raw, f"{path}: vector {index}")
        try:
            protocol = parse_protocol_name(vector.protocol_name)
        except ProtocolNameError as exc:
            report.skipped += 1
            report.skips.append(VectorFailure(str(path), index, vector.protocol_name, str(exc)))
            continue
        try:
            if vector.is_noisesocket():
                _run_noisesocket_vector(vector, protocol)
            else:
                _run_noise_vector(vector, protocol)
        except (VectorMismatch, NoiseError) as exc:
            report.failed += 1
            reason = f"{type(exc).__name__}: {exc}"
            report.failures.append(VectorFailure(str(path), index, vector.protocol_name, reason))
        else:
            report.passed += 1
    return report
