"""The WhatsApp-style framing (sans-IO).

As open-source WhatsApp clients show (see ``shared/design/censor-facts.md``):
the initiator opens the stream with 4 cleartext bytes ``W A <major> <minor>``,
which are also the Noise prologue; after that every Noise message, handshake
or transport, travels as a 3-byte big-endian length followed by the message.
There is no negotiation and no padding: both ends are configured with the
same protocol (``Noise_XX_25519_AESGCM_SHA256`` by default).
"""

from __future__ import annotations

from noisewall.noise.cipherstate import MAX_MESSAGE_LEN
from noisewall.noise.connection import NoiseConnection
from noisewall.noise.errors import FramingError
from noisewall.noise.events import Event
from noisewall.noise.settings import NoiseSettings

MAGIC = b"WA"
HEADER_LEN = 4
LENGTH_LEN = 3
DEFAULT_VERSION = (5, 2)


def wa_header(major: int, minor: int) -> bytes:
    """The 4-byte stream header ``W A <major> <minor>``."""
    if not (0 <= major <= 255 and 0 <= minor <= 255):
        raise ValueError("WA version numbers are single bytes")
    return MAGIC + bytes((major, minor))


def encode_wa_frame(noise_message: bytes) -> bytes:
    """One WA frame: 3-byte big-endian length, then the Noise message."""
    if len(noise_message) > MAX_MESSAGE_LEN:
        raise FramingError(f"Noise message of {len(noise_message)} bytes exceeds 65535")
    return len(noise_message).to_bytes(LENGTH_LEN, "big") + noise_message


class WAConnection(NoiseConnection):
    """One end of a WA-framed Noise session (sans-IO); used like NoiseSocketConnection."""

    def __init__(
        self,
        initiator: bool,
        settings: NoiseSettings,
        version: tuple[int, int] = DEFAULT_VERSION,
    ) -> None:
        super().__init__(initiator, settings)
        self._header = wa_header(*version)
        self._header_seen = initiator  # only the responder reads a header
        self.peer_version: tuple[int, int] | None = None

    def _body_overhead(self) -> int:
        return 0

    def _encode_body(self, body: bytes, encrypted: bool, room: int) -> bytes:
        return body

    def _decode_body(self, payload: bytes, encrypted: bool) -> bytes:
        return payload

    def _transport_prefix(self, length: int) -> bytes:
        return length.to_bytes(LENGTH_LEN, "big")

    def _start_handshake_if_needed(self) -> None:
        if self._handshake is None:
            prologue = self._header + self.settings.prologue
            self._handshake = self.settings.handshake(self.settings.protocol, True, prologue)

    def _frame_handshake(self, noise_message: bytes) -> bytes:
        frame = encode_wa_frame(noise_message)
        if self.initiator and self._require_handshake().message_index == 1:
            return self._header + frame
        return frame

    def _process_one(self, events: list[Event]) -> bool:
        if not self._header_seen:
            header = self._pop(HEADER_LEN)
            if header is None:
                if self._inbox and not MAGIC.startswith(bytes(self._inbox[:2])):
                    raise FramingError("stream does not start with the WA header")
                return False
            if header[:2] != MAGIC:
                raise FramingError(f"stream does not start with the WA header: {header.hex()}")
            self._header_seen = True
            self.peer_version = (header[2], header[3])
            prologue = header + self.settings.prologue
            self._handshake = self.settings.handshake(self.settings.protocol, False, prologue)
            return True
        if len(self._inbox) < LENGTH_LEN:
            return False
        length = int.from_bytes(self._inbox[:LENGTH_LEN], "big")
        if length > MAX_MESSAGE_LEN:
            raise FramingError(f"WA frame of {length} bytes exceeds the 65535-byte Noise limit")
        message = self._pop(length, LENGTH_LEN)
        if message is None:
            return False
        if self.handshake_complete:
            self._read_transport(message, events)
        else:
            self._read_handshake(message, events)
        return True
