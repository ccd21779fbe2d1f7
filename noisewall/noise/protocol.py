"""Noise protocol names (spec section 8): ``Noise_<pattern>_<DH>_<cipher>_<hash>``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from noisewall.noise.ciphers import CipherFunction, cipher_function
from noisewall.noise.dh import DHFunction, dh_function
from noisewall.noise.errors import PatternError, ProtocolNameError
from noisewall.noise.hashes import HashFunction, hash_function
from noisewall.noise.patterns import HandshakePattern, parse_pattern

MAX_NAME_LENGTH = 255
_SECTION = re.compile(r"^[A-Za-z0-9+/]+$")


@dataclass(frozen=True)
class NoiseProtocol:
    """A parsed, validated Noise protocol: its pattern and crypto functions."""

    name: str
    pattern: HandshakePattern
    dh: DHFunction
    cipher: CipherFunction
    hash: HashFunction

    def __str__(self) -> str:
        return self.name


@lru_cache(maxsize=512)
def parse_protocol_name(name: str) -> NoiseProtocol:
    """Parse and validate a full protocol name; raise :class:`ProtocolNameError` if bad."""
    if len(name.encode("utf-8", "replace")) > MAX_NAME_LENGTH:
        raise ProtocolNameError(f"protocol name longer than {MAX_NAME_LENGTH} bytes")
    sections = name.split("_")
    if len(sections) != 5 or sections[0] != "Noise":
        raise ProtocolNameError(
            f"bad protocol name {name!r}: expected Noise_<pattern>_<DH>_<cipher>_<hash>, "
            "e.g. Noise_XX_25519_AESGCM_SHA256"
        )
    for section in sections[1:]:
        if not _SECTION.match(section):
            raise ProtocolNameError(
                f"bad protocol name {name!r}: section {section!r} may hold only "
                "letters, digits, '+' and '/'"
            )
    _, pattern_name, dh_name, cipher_name, hash_name = sections
    try:
        pattern = parse_pattern(pattern_name)
    except PatternError as exc:
        raise ProtocolNameError(f"bad protocol name {name!r}: {exc}") from None
    return NoiseProtocol(
        name, pattern, dh_function(dh_name), cipher_function(cipher_name), hash_function(hash_name)
    )
