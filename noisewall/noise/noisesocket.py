"""NoiseSocket, revision 2draft (sans-IO), with noisewall's negotiation data.

Wire format (spec section 2): handshake frames are ``negotiation_data_len (u16)
| negotiation_data | noise_message_len (u16) | noise_message``; transport frames
``noise_message_len (u16) | noise_message``. Encrypted payloads carry ``body_len
(u16) | body | padding``; cleartext handshake payloads are the bare body.

noisewall's negotiation data (documented in the README):

* Alice's initial frame: the UTF-8 name of the initial Noise protocol.
* Bob's response: empty to accept; a protocol name plus a Noise message to
  switch; a protocol name and an empty Noise message to request a retry; any
  other UTF-8 text (not starting with ``Noise_``) with an empty Noise message
  is an explicit reject reason, after which Bob closes the connection.
* Alice's retry frame names the protocol she retries with; all later frames
  carry empty negotiation data.
"""

from __future__ import annotations

from enum import Enum, auto

from noisewall.noise.cipherstate import MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN
from noisewall.noise.connection import NoiseConnection
from noisewall.noise.errors import (
    FramingError,
    MessageTooLongError,
    NegotiationError,
    NoiseError,
    ProtocolNameError,
    RejectedError,
)
from noisewall.noise.events import Event, ProtocolSwitched
from noisewall.noise.protocol import parse_protocol_name
from noisewall.noise.settings import NoiseSettings

PROLOGUE_INITIAL = b"NoiseSocketInit1"
PROLOGUE_SWITCH = b"NoiseSocketInit2"
PROLOGUE_RETRY = b"NoiseSocketInit3"
BODY_LEN_SIZE = 2
#: The largest body one transport message carries.
MAX_BODY = MAX_PLAINTEXT_LEN - BODY_LEN_SIZE
#: Explicit reject reasons must not look like protocol names, or they would read as retry.
PROTOCOL_PREFIX = "Noise_"


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def encode_handshake_frame(negotiation_data: bytes, noise_message: bytes) -> bytes:
    """A NoiseSocket handshake message (spec 2.1)."""
    if len(negotiation_data) > MAX_MESSAGE_LEN or len(noise_message) > MAX_MESSAGE_LEN:
        raise FramingError("negotiation data and Noise message are limited to 65535 bytes")
    return _u16(len(negotiation_data)) + negotiation_data + _u16(len(noise_message)) + noise_message


def padded_body_length(body_length: int, multiple: int, limit: int = MAX_BODY) -> int:
    """Length of body plus padding when padding to a multiple of ``multiple`` bytes.

    An empty body still gets one block, so an empty message does not stand
    out. The result never exceeds ``limit``, the room the message has.
    """
    if multiple <= 0:
        return body_length
    blocks = max(1, -(-body_length // multiple))
    return max(body_length, min(blocks * multiple, limit))


def encode_payload(body: bytes, padding: int = 0, room: int = MAX_PLAINTEXT_LEN) -> bytes:
    """An encrypted payload's plaintext: ``body_len | body | zero padding`` (spec 2.3).

    ``room`` is the plaintext the Noise message can still carry (less than
    65519 in a handshake message, whose keys take space too).
    """
    limit = room - BODY_LEN_SIZE
    if len(body) > limit:
        raise MessageTooLongError(
            f"body of {len(body)} bytes exceeds the {limit} bytes it has room for"
        )
    fill = padded_body_length(len(body), padding, limit) - len(body)
    return _u16(len(body)) + body + bytes(fill)


def decode_payload(plaintext: bytes) -> bytes:
    """The body of a decrypted payload; padding is ignored as the spec requires."""
    if len(plaintext) < BODY_LEN_SIZE:
        raise FramingError("encrypted payload shorter than its body_len field")
    body_len = int.from_bytes(plaintext[:BODY_LEN_SIZE], "big")
    if body_len > len(plaintext) - BODY_LEN_SIZE:
        raise FramingError(
            f"body_len {body_len} exceeds the {len(plaintext) - BODY_LEN_SIZE} bytes that follow"
        )
    return plaintext[BODY_LEN_SIZE : BODY_LEN_SIZE + body_len]


class _Phase(Enum):
    START = auto()  # initiator: nothing sent; responder: waiting for the initial frame
    AWAIT_RESPONSE = auto()  # initiator: initial frame sent, waiting for accept/switch/...
    AWAIT_RETRY = auto()  # responder: asked for a retry, waiting for Alice's new frame
    HANDSHAKE = auto()  # negotiation settled: frames carry empty negotiation data


class NoiseSocketConnection(NoiseConnection):
    """One end of a NoiseSocket session (sans-IO).

    Initiator: call :meth:`send_handshake` to send the initial message, then feed
    the peer's bytes to :meth:`receive_data`, answering with
    :meth:`send_handshake` whenever :attr:`needs_write` is true, until a
    :class:`HandshakeComplete` event. The responder does the same from the
    first :meth:`receive_data`. Accept, switch (e.g. IK to XXfallback), retry
    and explicit reject follow the responder's :class:`NoiseSettings`.
    """

    def __init__(self, initiator: bool, settings: NoiseSettings) -> None:
        super().__init__(initiator, settings)
        self._phase = _Phase.START
        self._negotiation = b""  # negotiation data for our next handshake frame
        self._transcript = b""  # bytes that later prologues (Init2, Init3) cover

    # --- framing hooks -------------------------------------------------

    def _body_overhead(self) -> int:
        return BODY_LEN_SIZE

    def _encode_body(self, body: bytes, encrypted: bool, room: int) -> bytes:
        return encode_payload(body, self.settings.padding, room) if encrypted else body

    def _decode_body(self, payload: bytes, encrypted: bool) -> bytes:
        return decode_payload(payload) if encrypted else payload

    def _transport_prefix(self, length: int) -> bytes:
        return _u16(length)

    def _start_handshake_if_needed(self) -> None:
        if self._handshake is not None:
            return
        name = self.settings.protocol
        negotiation = self.settings.negotiation_data
        if negotiation is None:
            negotiation = name.encode("utf-8")
        prologue = PROLOGUE_INITIAL + _u16(len(negotiation)) + negotiation
        self._handshake = self.settings.handshake(name, True, prologue + self.settings.prologue)
        self._negotiation = negotiation

    def _frame_handshake(self, noise_message: bytes) -> bytes:
        frame = encode_handshake_frame(self._negotiation, noise_message)
        self._negotiation = b""
        if self._phase is _Phase.START:  # the initial frame: later prologues cover it
            self._transcript = frame
            self._phase = _Phase.AWAIT_RESPONSE
        elif self._phase is _Phase.AWAIT_RESPONSE:  # our retry frame
            self._phase = _Phase.HANDSHAKE
        return frame

    # --- incoming ------------------------------------------------------

    def _pop_handshake_frame(self) -> tuple[bytes, bytes] | None:
        inbox = self._inbox
        if len(inbox) < 2:
            return None
        negotiation_len = int.from_bytes(inbox[:2], "big")
        if len(inbox) < 4 + negotiation_len:
            return None
        message_len = int.from_bytes(inbox[2 + negotiation_len : 4 + negotiation_len], "big")
        frame = self._pop(4 + negotiation_len + message_len)
        if frame is None:
            return None
        return frame[2 : 2 + negotiation_len], frame[4 + negotiation_len :]

    def _process_one(self, events: list[Event]) -> bool:
        if self._finished:
            return False
        if self.handshake_complete:
            if len(self._inbox) < 2:
                return False
            message = self._pop(int.from_bytes(self._inbox[:2], "big"), 2)
            if message is None:
                return False
            self._read_transport(message, events)
            return True
        frame = self._pop_handshake_frame()
        if frame is None:
            return False
        negotiation, message = frame
        if self._phase is _Phase.START:
            self._on_initial(negotiation, message, events)
        elif self._phase is _Phase.AWAIT_RESPONSE:
            self._on_response(negotiation, message, events)
        elif self._phase is _Phase.AWAIT_RETRY:
            self._on_retry(negotiation, message, events)
        else:
            if negotiation:
                raise NegotiationError("negotiation data after negotiation was settled")
            self._read_handshake(message, events)
        return True

    @staticmethod
    def _decode_name(negotiation: bytes) -> str:
        try:
            return negotiation.decode("utf-8")
        except UnicodeDecodeError:
            raise NegotiationError("negotiation data is not UTF-8") from None

    # responder ----------------------------------------------------------

    def _on_initial(self, negotiation: bytes, message: bytes, events: list[Event]) -> None:
        self._transcript = encode_handshake_frame(negotiation, message)
        if negotiation and negotiation == self.settings.negotiation_data:
            name = self.settings.protocol
        else:
            name = self._decode_name(negotiation)
        try:
            parse_protocol_name(name)
        except ProtocolNameError:
            self._reject("unknown Noise protocol")
            return
        if not self.settings.acceptable(name):
            if self.settings.retry_with is not None:
                retry = self.settings.retry_with.encode("utf-8")
                self._outbox += encode_handshake_frame(retry, b"")
                self._transcript += encode_handshake_frame(retry, b"")
                self._phase = _Phase.AWAIT_RETRY
            else:
                self._reject(f"protocol not supported: {name}")
            return
        prologue = PROLOGUE_INITIAL + _u16(len(negotiation)) + negotiation
        self._handshake = self.settings.handshake(name, False, prologue + self.settings.prologue)
        self._phase = _Phase.HANDSHAKE
        fallback = self.settings.fallbacks.get(name)
        if fallback is None:
            self._read_handshake(message, events)
            return
        try:
            self._read_handshake(message, events)
        except NoiseError:
            self._switch_to(fallback, events)

    def _switch_to(self, name: str, events: list[Event]) -> None:
        # Bob cannot read Alice's first message (e.g. IK with a stale key): he
        # starts the fallback protocol and sends its first message himself.
        failed = self._require_handshake()
        negotiation = name.encode("utf-8")
        prologue = PROLOGUE_SWITCH + self._transcript + _u16(len(negotiation)) + negotiation
        prologue += self.settings.prologue
        protocol = parse_protocol_name(name)
        psks = self.settings.psks[: protocol.pattern.psk_count]
        if "fallback" in protocol.pattern.name:
            self._handshake = failed.fallback(protocol, prologue, psks)
        else:
            self._handshake = self.settings.handshake(protocol, True, prologue)
        self._negotiation = negotiation
        events.append(ProtocolSwitched(name, retry=False))

    def _reject(self, reason: str) -> None:
        if reason.startswith(PROTOCOL_PREFIX):
            reason = "rejected: " + reason
        self._outbox += encode_handshake_frame(reason.encode("utf-8"), b"")
        self._finished = True

    def _on_retry(self, negotiation: bytes, message: bytes, events: list[Event]) -> None:
        name = self.settings.retry_with
        assert name is not None  # AWAIT_RETRY is only entered with retry_with set
        if negotiation and self._decode_name(negotiation) != name:
            raise NegotiationError(f"retry named another protocol than {name}")
        prologue = PROLOGUE_RETRY + self._transcript + _u16(len(negotiation)) + negotiation
        self._handshake = self.settings.handshake(name, False, prologue + self.settings.prologue)
        self._phase = _Phase.HANDSHAKE
        self._read_handshake(message, events)

    # initiator ------------------------------------------------------------

    def _on_response(self, negotiation: bytes, message: bytes, events: list[Event]) -> None:
        if not negotiation:
            if not message:
                raise NegotiationError("empty response: neither accept nor any other choice")
            self._phase = _Phase.HANDSHAKE
            self._read_handshake(message, events)
            return
        text = self._decode_name(negotiation)
        if not text.startswith(PROTOCOL_PREFIX):
            if message:
                raise NegotiationError("switch response names no Noise protocol")
            raise RejectedError(text)
        if not (self.settings.acceptable(text) or text in self.settings.fallbacks.values()):
            raise NegotiationError(f"responder chose a protocol we do not accept: {text}")
        protocol = parse_protocol_name(text)
        psks = self.settings.psks[: protocol.pattern.psk_count]
        if message:  # switch: Bob sent the new protocol's first message
            prologue = PROLOGUE_SWITCH + self._transcript + _u16(len(negotiation)) + negotiation
            prologue += self.settings.prologue
            if "fallback" in protocol.pattern.name:
                self._handshake = self._require_handshake().fallback(protocol, prologue, psks)
            else:
                self._handshake = self.settings.handshake(protocol, False, prologue)
            self._phase = _Phase.HANDSHAKE
            events.append(ProtocolSwitched(text, retry=False))
            self._read_handshake(message, events)
            return
        # retry: Alice sends a new initial message for Bob's protocol.
        self._transcript += encode_handshake_frame(negotiation, b"")
        prologue = PROLOGUE_RETRY + self._transcript + _u16(len(negotiation)) + negotiation
        self._handshake = self.settings.handshake(protocol, True, prologue + self.settings.prologue)
        self._negotiation = negotiation
        events.append(ProtocolSwitched(text, retry=True))
