"""The sans-IO machinery shared by the NoiseSocket and WA framings.

A connection object owns a HandshakeState and then the transport
CipherStates. Feed it bytes from the wire with :meth:`receive_data` (in any
chunking; ``b""`` means end of stream) and it returns events; write what
:meth:`data_to_send` returns. It never touches a socket or a clock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from noisewall.noise.ciphers import TAGLEN
from noisewall.noise.cipherstate import MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN
from noisewall.noise.errors import (
    ConnectionClosedError,
    FramingError,
    HandshakeStateError,
    MessageTooLongError,
    NoiseError,
)
from noisewall.noise.events import (
    Event,
    HandshakeComplete,
    HandshakePayload,
    MessageReceived,
    PeerClosed,
)
from noisewall.noise.handshakestate import HandshakeState, Transport
from noisewall.noise.settings import NoiseSettings

#: A cap on buffered, unframed input: one maximal frame plus its headers.
MAX_BUFFERED = 2 * 65535 + 8
#: Transport plaintexts from this size up are encrypted straight into their frame;
#: below it a buffer and a memoryview cost more than the copy they save.
IN_PLACE_THRESHOLD = 4096


class NoiseConnection(ABC):
    """One party's end of a framed Noise session (sans-IO)."""

    def __init__(self, initiator: bool, settings: NoiseSettings) -> None:
        self.initiator = initiator
        self.settings = settings
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._handshake: HandshakeState | None = None
        self._transport: Transport | None = None
        self._failed: NoiseError | None = None
        self._finished = False  # we must close after flushing (explicit reject)

    # --- public API ----------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        """True once transport messages may be sent and received."""
        return self._transport is not None

    @property
    def remote_static(self) -> bytes | None:
        """The peer's authenticated static public key, once the handshake has it."""
        if self._transport is not None:
            return self._transport.remote_static
        return self._handshake.remote_static if self._handshake else None

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash, for channel binding."""
        return self.transport.handshake_hash

    @property
    def protocol_name(self) -> str | None:
        """The Noise protocol currently in use."""
        return self._handshake.protocol.name if self._handshake else None

    @property
    def transport(self) -> Transport:
        """The transport CipherStates (raises before the handshake completes)."""
        if self._transport is None:
            raise HandshakeStateError("the handshake is not complete")
        return self._transport

    @property
    def must_close(self) -> bool:
        """True when the protocol requires closing the stream after the pending output."""
        return self._finished

    @property
    def max_body(self) -> int:
        """The largest body one transport message can carry."""
        return MAX_PLAINTEXT_LEN - self._body_overhead()

    def data_to_send(self) -> bytes:
        """Take the bytes waiting to be written to the peer."""
        return bytes(self.take_outgoing())

    def take_outgoing(self) -> bytearray:
        """Like :meth:`data_to_send`, but hand over the buffer itself, uncopied.

        The bulk path (:class:`NoiseStream` uses it): the caller owns the
        returned buffer; the connection starts a new one.
        """
        data = self._outbox
        self._outbox = bytearray()
        return data

    def send_message(self, body: bytes) -> None:
        """Encrypt and frame one transport message."""
        self._check_usable()
        send = self.transport.send
        if send is None:
            raise HandshakeStateError("a one-way pattern's responder cannot send")
        if len(body) > self.max_body:
            raise MessageTooLongError(
                f"body of {len(body)} bytes exceeds the {self.max_body}-byte frame limit"
            )
        plaintext = self._encode_body(body, True, MAX_PLAINTEXT_LEN)
        prefix = self._transport_prefix(len(plaintext) + TAGLEN)
        if len(plaintext) < IN_PLACE_THRESHOLD:
            outbox = self._outbox
            outbox += prefix
            outbox += send.encrypt(plaintext)
            return
        # Build the frame in one buffer and encrypt straight into it: the body
        # is copied once (into the plaintext) and the ciphertext never.
        frame = bytearray(len(prefix) + len(plaintext) + TAGLEN)
        frame[: len(prefix)] = prefix
        send.encrypt_into(plaintext, memoryview(frame)[len(prefix) :])
        if self._outbox:
            self._outbox += frame
        else:
            self._outbox = frame

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the peer; ``b""`` signals end of stream.

        Raises a :class:`NoiseError` on any protocol violation; the connection
        is then dead and must be closed.
        """
        self._check_usable()
        events: list[Event] = []
        try:
            if not data:
                self._on_eof(events)
                return events
            self._inbox += data
            while self._process_one(events):
                pass
            if len(self._inbox) > MAX_BUFFERED:
                raise FramingError("buffered input exceeds the largest possible frame")
        except NoiseError as exc:
            self._failed = exc
            raise
        return events

    # --- shared steps --------------------------------------------------

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise ConnectionClosedError(f"connection already failed: {self._failed}")

    def _on_eof(self, events: list[Event]) -> None:
        if self._inbox:
            raise ConnectionClosedError(
                f"stream ended inside a frame ({len(self._inbox)} bytes of a partial frame)"
            )
        if not self.handshake_complete:
            raise ConnectionClosedError("peer closed the connection during the handshake")
        events.append(PeerClosed())

    @property
    def needs_write(self) -> bool:
        """True when the handshake waits for this party's :meth:`send_handshake`."""
        if self._finished or self._failed is not None:
            return False
        if self._handshake is None:
            return self.initiator
        return self._handshake.writes_next

    def send_handshake(self, payload: bytes = b"") -> list[Event]:
        """Write this party's next handshake message, carrying ``payload``.

        Returns the :class:`HandshakeComplete` event if this message ends the handshake.
        """
        self._check_usable()
        if not self.needs_write:
            raise HandshakeStateError("it is not this party's turn to write a handshake message")
        events: list[Event] = []
        try:
            self._start_handshake_if_needed()
            handshake = self._require_handshake()
            layout = handshake.next_layout()
            room = MAX_MESSAGE_LEN - layout.overhead - TAGLEN
            message = handshake.write_message(
                self._encode_body(payload, layout.payload_encrypted, room)
            )
            self._outbox += self._frame_handshake(message)
            self._check_complete(events)
        except NoiseError as exc:
            self._failed = exc
            raise
        return events

    def _read_handshake(self, message: bytes, events: list[Event]) -> None:
        """ReadMessage on the current handshake; report its payload and completion."""
        handshake = self._require_handshake()
        encrypted = handshake.next_layout().payload_encrypted
        body = self._decode_body(handshake.read_message(message), encrypted)
        if body:
            events.append(HandshakePayload(body))
        self._check_complete(events)

    def _read_transport(self, message: bytes, events: list[Event]) -> None:
        receive = self.transport.receive
        if receive is None:
            raise HandshakeStateError("a one-way pattern's initiator cannot receive")
        events.append(MessageReceived(self._decode_body(receive.decrypt(message), True)))

    def _check_complete(self, events: list[Event]) -> None:
        handshake = self._require_handshake()
        if handshake.complete and self._transport is None:
            transport = self._transport = handshake.transport()
            events.append(
                HandshakeComplete(
                    handshake.protocol.name, transport.handshake_hash, transport.remote_static
                )
            )

    def _require_handshake(self) -> HandshakeState:
        if self._handshake is None:
            raise HandshakeStateError("no handshake has started")
        return self._handshake

    def _pop(self, length: int, offset: int = 0) -> bytes | None:
        """Take ``length`` bytes after skipping ``offset``, or None if not all here yet."""
        end = offset + length
        if len(self._inbox) < end:
            return None
        chunk = bytes(self._inbox[offset:end])
        del self._inbox[:end]
        return chunk

    # --- framing-specific ----------------------------------------------

    @abstractmethod
    def _process_one(self, events: list[Event]) -> bool:
        """Consume one whole frame from the inbox if there is one; return whether it did."""

    @abstractmethod
    def _start_handshake_if_needed(self) -> None:
        """Create the initiator's first HandshakeState when the first write comes."""

    @abstractmethod
    def _frame_handshake(self, noise_message: bytes) -> bytes:
        """Frame a handshake message for the wire (with any pending negotiation data)."""

    @abstractmethod
    def _transport_prefix(self, length: int) -> bytes:
        """The framing's bytes before a transport message of ``length`` bytes."""

    @abstractmethod
    def _body_overhead(self) -> int:
        """Bytes the framing adds inside an encrypted payload."""

    @abstractmethod
    def _encode_body(self, body: bytes, encrypted: bool, room: int) -> bytes:
        """Turn an application body into a Noise payload of at most ``room`` bytes."""

    @abstractmethod
    def _decode_body(self, payload: bytes, encrypted: bool) -> bytes:
        """Turn a decrypted Noise payload back into the application body."""
