"""The WhatsApp-style framing: ``W A <major> <minor>``, then 3-byte-length frames.

The client's first data is the 4-byte header followed by its first Noise
handshake message (at least one 32-byte ephemeral key) in one frame.
"""

from __future__ import annotations

from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult

MAGIC = b"WA"
MIN_NOISE_MESSAGE = 32
#: A first handshake message is small; WhatsApp's is well under 1 KiB.
MAX_FIRST_FRAME = 65535


def inspect(data: bytes) -> InspectResult:
    """Classify the first bytes a client sent."""
    if not MAGIC.startswith(data[:2]):
        return None
    if len(data) < 7:
        return NEED_MORE
    frame_len = int.from_bytes(data[4:7], "big")
    if not MIN_NOISE_MESSAGE <= frame_len <= MAX_FIRST_FRAME:
        return None
    if len(data) < 7 + frame_len:
        return NEED_MORE
    features = {"version": f"{data[2]}.{data[3]}", "first_frame_len": frame_len}
    return Detection("wa", 0.95 if len(data) == 7 + frame_len else 0.8, features)
