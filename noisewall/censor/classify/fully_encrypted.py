"""The GFW's fully-encrypted-traffic rule (Wu et al., USENIX Security 2023).

Applied to the first data packet from client to server. A connection is
exempt if any exemption holds, checked in the paper's order; otherwise it is a
blocking candidate. The numbers are the paper's (``shared/design/censor-facts.md``):

* Ex1: average set bits per byte <= 3.4 or >= 4.6 (random data averages 4.0)
* Ex2: the first 6 bytes are all printable ASCII (0x20-0x7e)
* Ex3: more than 50% of the bytes are printable ASCII
* Ex4: more than 20 contiguous printable ASCII bytes
* Ex5: starts like TLS (``[\\x16-\\x17]\\x03[\\x00-\\x09]``) or HTTP (``GET``, ``PUT``,
  ``POST``, ``HEAD`` and a space)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from noisewall.censor.flowrecord import Detection, InspectResult

POPCOUNT_LOW = 3.4
POPCOUNT_HIGH = 4.6
_POPCOUNT = bytes(bin(byte).count("1") for byte in range(256))
_PRINTABLE = bytes(range(0x20, 0x7F))
_NOT_PRINTABLE = bytes(byte for byte in range(256) if byte not in _PRINTABLE)
_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]{21,}")
_TLS_START = re.compile(rb"^[\x16\x17]\x03[\x00-\x09]")
_HTTP_STARTS = (b"GET ", b"PUT ", b"POST ", b"HEAD ")


@dataclass(frozen=True)
class FullyEncryptedVerdict:
    """The rule's outcome on one packet: flagged, or the exemption that applied."""

    flagged: bool
    exemption: str | None
    popcount: float


def popcount_average(data: bytes) -> float:
    """Average number of set bits per byte."""
    return sum(data.translate(_POPCOUNT)) / len(data) if data else 0.0


def evaluate(first_packet: bytes) -> FullyEncryptedVerdict | None:
    """Apply the rule to the first client data packet; None for an empty packet."""
    if not first_packet:
        return None
    popcount = popcount_average(first_packet)
    if popcount <= POPCOUNT_LOW or popcount >= POPCOUNT_HIGH:
        return FullyEncryptedVerdict(False, "Ex1", popcount)
    if len(first_packet) >= 6 and not first_packet[:6].translate(None, _PRINTABLE):
        return FullyEncryptedVerdict(False, "Ex2", popcount)
    printable = len(first_packet.translate(None, _NOT_PRINTABLE))
    if printable * 2 > len(first_packet):
        return FullyEncryptedVerdict(False, "Ex3", popcount)
    if _PRINTABLE_RUN.search(first_packet):
        return FullyEncryptedVerdict(False, "Ex4", popcount)
    if _TLS_START.match(first_packet) or first_packet.startswith(_HTTP_STARTS):
        return FullyEncryptedVerdict(False, "Ex5", popcount)
    return FullyEncryptedVerdict(True, None, popcount)


def inspect(data: bytes) -> InspectResult:
    """A Detection when the packet is a blocking candidate, None when exempt or empty."""
    verdict = evaluate(data)
    if verdict is None or not verdict.flagged:
        return None
    return Detection("fully_encrypted", 0.5, {"popcount": round(verdict.popcount, 3)})
