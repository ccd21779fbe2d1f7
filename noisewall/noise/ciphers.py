"""Noise cipher functions (spec sections 12.3 and 12.4): ``ChaChaPoly`` and ``AESGCM``.

The two differ in nonce encoding: ChaChaPoly puts the 64-bit counter little-endian
after 32 zero bits, AESGCM big-endian.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from noisewall.noise.errors import unsupported

KEYLEN = 32
TAGLEN = 16
MAX_NONCE = 2**64 - 1
_NONCE_PREFIX = b"\x00\x00\x00\x00"


class AEAD(Protocol):
    """The ``cryptography`` AEAD interface both ciphers share."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


class AEADInto(AEAD, Protocol):
    """An AEAD that can also encrypt into a caller's buffer (``cryptography`` >= 47)."""

    def encrypt_into(
        self, nonce: bytes, data: bytes, associated_data: bytes | None, buf: memoryview
    ) -> int: ...


def _aesgcm_nonce(n: int) -> bytes:
    return _NONCE_PREFIX + n.to_bytes(8, "big")


def _chachapoly_nonce(n: int) -> bytes:
    return _NONCE_PREFIX + n.to_bytes(8, "little")


@dataclass(frozen=True)
class CipherFunction:
    """One of the spec's AEAD ciphers: a key-to-AEAD factory and its nonce encoding."""

    name: str
    new_aead: Callable[[bytes], AEAD]
    nonce: Callable[[int], bytes]

    def encrypt_into(self, aead: AEAD, nonce: bytes, plaintext: bytes, out: memoryview) -> None:
        """ENCRYPT(k, n, empty, plaintext) written into ``out``, in place where the AEAD can."""
        if isinstance(aead, AESGCM | ChaCha20Poly1305):
            into: AEADInto = aead
            into.encrypt_into(nonce, plaintext, b"", out)
        else:
            out[:] = aead.encrypt(nonce, plaintext, b"")

    def rekey(self, aead: AEAD) -> bytes:
        """REKEY(k): the first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes)."""
        return aead.encrypt(self.nonce(MAX_NONCE), bytes(KEYLEN), b"")[:KEYLEN]


CIPHER_FUNCTIONS: dict[str, CipherFunction] = {
    "AESGCM": CipherFunction("AESGCM", AESGCM, _aesgcm_nonce),
    "ChaChaPoly": CipherFunction("ChaChaPoly", ChaCha20Poly1305, _chachapoly_nonce),
}


def cipher_function(name: str) -> CipherFunction:
    """Look up a cipher by its protocol-name section (``AESGCM`` or ``ChaChaPoly``)."""
    try:
        return CIPHER_FUNCTIONS[name]
    except KeyError:
        raise unsupported("cipher", name, CIPHER_FUNCTIONS) from None
