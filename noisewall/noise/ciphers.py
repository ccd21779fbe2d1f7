"""Noise cipher functions: ``ChaChaPoly`` and ``AESGCM`` (spec 12.3, 12.4) and ``XChaChaPoly``.

They differ in nonce encoding: ChaChaPoly puts the 64-bit counter little-endian
after 32 zero bits, AESGCM big-endian. ``XChaChaPoly`` is beyond the spec, as
snow has it: XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) with a 24-byte nonce
of 128 zero bits and the counter little-endian; libsodium does the work
(through PyNaCl), as ``cryptography`` has no XChaCha20-Poly1305.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

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


class XChaCha20Poly1305:
    """XChaCha20-Poly1305 with the ``cryptography`` AEAD interface (libsodium underneath)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEYLEN:
            raise ValueError("XChaCha20-Poly1305 keys are 32 bytes")
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        """Ciphertext and 16-byte tag."""
        return crypto_aead_xchacha20poly1305_ietf_encrypt(
            data, associated_data or b"", nonce, self._key
        )

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        """The plaintext; raises ``InvalidTag`` as ``cryptography``'s AEADs do."""
        try:
            return crypto_aead_xchacha20poly1305_ietf_decrypt(
                data, associated_data or b"", nonce, self._key
            )
        except CryptoError:
            raise InvalidTag from None


def _xchachapoly_nonce(n: int) -> bytes:
    return bytes(16) + n.to_bytes(8, "little")


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
    "XChaChaPoly": CipherFunction("XChaChaPoly", XChaCha20Poly1305, _xchachapoly_nonce),
}


def cipher_function(name: str) -> CipherFunction:
    """Look up a cipher by its protocol-name section (e.g. ``AESGCM``)."""
    try:
        return CIPHER_FUNCTIONS[name]
    except KeyError:
        raise unsupported("cipher", name, CIPHER_FUNCTIONS) from None
