"""Noise hash functions (spec sections 4.3, 12.5-12.8) with their HMAC and HKDF."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from noisewall.noise.errors import ProtocolNameError


@dataclass(frozen=True)
class HashFunction:
    """HASH(), HMAC-HASH() and HKDF() for one of the spec's hash functions."""

    name: str
    hashlen: int
    blocklen: int
    # hashlib constructors; hmac.digest takes the OpenSSL one-shot path for them.
    _constructor: Callable[..., Any]

    def hash(self, data: bytes) -> bytes:
        """HASH(data)."""
        return self._constructor(data).digest()  # type: ignore[no-any-return]

    def hmac(self, key: bytes, data: bytes) -> bytes:
        """HMAC-HASH(key, data) per RFC 2104."""
        return hmac.digest(key, data, self._constructor)

    def hkdf(self, chaining_key: bytes, input_key_material: bytes, outputs: int) -> list[bytes]:
        """HKDF(chaining_key, input_key_material, num_outputs) of spec section 4.3."""
        temp_key = hmac.digest(chaining_key, input_key_material, self._constructor)
        result: list[bytes] = []
        previous = b""
        for index in range(1, outputs + 1):
            previous = hmac.digest(temp_key, previous + bytes((index,)), self._constructor)
            result.append(previous)
        return result


HASH_FUNCTIONS: dict[str, HashFunction] = {
    "SHA256": HashFunction("SHA256", 32, 64, hashlib.sha256),
    "SHA512": HashFunction("SHA512", 64, 128, hashlib.sha512),
    "BLAKE2s": HashFunction("BLAKE2s", 32, 64, hashlib.blake2s),
    "BLAKE2b": HashFunction("BLAKE2b", 64, 128, hashlib.blake2b),
}


def hash_function(name: str) -> HashFunction:
    """Look up a hash function by its protocol-name section."""
    try:
        return HASH_FUNCTIONS[name]
    except KeyError:
        raise ProtocolNameError(
            f"unsupported hash {name!r} (supported: {', '.join(HASH_FUNCTIONS)})"
        ) from None
