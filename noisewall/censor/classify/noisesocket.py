"""NoiseSocket handshake, recognised by structure (NoiseSocket 2draft, section 2.1).

Alice's first message is ``negotiation_data_len (u16) | negotiation_data |
noise_message_len (u16) | noise_message`` and she then waits for Bob, so the
first client data is exactly one such frame. The Noise message starts with an
ephemeral public key (32 bytes for 25519, 56 for 448), so it is at least 32
bytes long. Negotiation data that names a Noise protocol is near-certain proof.
"""

from __future__ import annotations

from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult

MIN_NOISE_MESSAGE = 32  # an X25519 ephemeral key
#: Negotiation data is a short label in every known deployment; longer is implausible.
MAX_NEGOTIATION = 1024


def _printable(data: bytes) -> bool:
    return all(0x20 <= byte < 0x7F for byte in data)


def inspect(data: bytes) -> InspectResult:
    """Classify the first bytes a client sent."""
    if len(data) < 2:
        return NEED_MORE
    negotiation_len = int.from_bytes(data[:2], "big")
    if negotiation_len > MAX_NEGOTIATION:
        return None
    header_end = 4 + negotiation_len
    if len(data) < header_end:
        return NEED_MORE
    message_len = int.from_bytes(data[2 + negotiation_len : header_end], "big")
    if message_len < MIN_NOISE_MESSAGE:
        return None
    total = header_end + message_len
    if len(data) < total:
        return NEED_MORE
    if len(data) > total:
        return None  # Alice waits for Bob after her first frame: nothing may follow it
    negotiation = data[2 : 2 + negotiation_len]
    features: dict[str, object] = {
        "negotiation_len": negotiation_len,
        "noise_message_len": message_len,
    }
    if negotiation and _printable(negotiation):
        text = negotiation.decode("ascii")
        features["negotiation"] = text
        confidence = 0.99 if text.startswith("Noise_") else 0.85
    else:
        confidence = 0.7 if not negotiation else 0.6
    return Detection("noisesocket", confidence, features)
