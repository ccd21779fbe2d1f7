"""The CipherState object (spec section 5.1)."""

from __future__ import annotations

from cryptography.exceptions import InvalidTag

from noisewall.noise.ciphers import AEAD, MAX_NONCE, TAGLEN, CipherFunction
from noisewall.noise.errors import (
    DecryptError,
    HandshakeStateError,
    MessageTooLongError,
    NonceExhaustedError,
)

MAX_MESSAGE_LEN = 65535
#: The largest transport plaintext: one Noise message minus the AEAD tag.
MAX_PLAINTEXT_LEN = MAX_MESSAGE_LEN - TAGLEN


class CipherState:
    """A key ``k`` and nonce ``n``; encrypts and decrypts with associated data.

    The AEAD object is built once per key, on first use: constructing one per
    message would cost as much as encrypting a small message, and a handshake
    sets keys (MixKey) that it never uses.
    """

    __slots__ = ("_aead", "_cipher", "_key", "_nonce", "n")

    def __init__(self, cipher: CipherFunction, key: bytes | None = None) -> None:
        self._cipher = cipher
        self._nonce = cipher.nonce
        self._key = key
        self._aead: AEAD | None = None
        self.n = 0

    def initialize_key(self, key: bytes | None) -> None:
        """InitializeKey(key): set ``k`` (``None`` empties it) and reset ``n`` to zero."""
        self._key = key
        self._aead = None
        self.n = 0

    def has_key(self) -> bool:
        """HasKey()."""
        return self._key is not None

    def _build_aead(self) -> AEAD | None:
        if self._key is None:
            return None
        self._aead = self._cipher.new_aead(self._key)
        return self._aead

    def set_nonce(self, nonce: int) -> None:
        """SetNonce(nonce), for applications that deliver messages out of order."""
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError("nonce must be in 0..2^64-1")
        self.n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd(ad, plaintext): ciphertext, or plaintext when there is no key."""
        aead = self._aead or self._build_aead()
        if aead is None:
            if len(plaintext) > MAX_MESSAGE_LEN:
                raise MessageTooLongError(f"message of {len(plaintext)} bytes exceeds 65535")
            return plaintext
        if len(plaintext) > MAX_PLAINTEXT_LEN:
            raise MessageTooLongError(
                f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT_LEN}"
            )
        n = self.n
        if n >= MAX_NONCE:
            raise NonceExhaustedError("nonce 2^64-1 is reserved; start a new handshake")
        ciphertext = aead.encrypt(self._nonce(n), plaintext, ad)
        self.n = n + 1
        return ciphertext

    def encrypt_into(self, plaintext: bytes, out: memoryview) -> None:
        """Encrypt a transport message into ``out`` (exactly ``len(plaintext) + 16`` bytes).

        The bulk path: the ciphertext lands in the caller's frame buffer, so a
        64 KiB message is not copied again after encryption.
        """
        aead = self._aead or self._build_aead()
        if aead is None:
            raise HandshakeStateError("encrypt_into needs a key: the handshake has not set one")
        if len(plaintext) > MAX_PLAINTEXT_LEN:
            raise MessageTooLongError(
                f"plaintext of {len(plaintext)} bytes exceeds {MAX_PLAINTEXT_LEN}"
            )
        n = self.n
        if n >= MAX_NONCE:
            raise NonceExhaustedError("nonce 2^64-1 is reserved; start a new handshake")
        self._cipher.encrypt_into(aead, self._nonce(n), plaintext, out)
        self.n = n + 1

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd(ad, ciphertext); on failure ``n`` is left unchanged."""
        aead = self._aead or self._build_aead()
        if len(ciphertext) > MAX_MESSAGE_LEN:
            raise MessageTooLongError(f"message of {len(ciphertext)} bytes exceeds 65535")
        if aead is None:
            return ciphertext
        n = self.n
        if n >= MAX_NONCE:
            raise NonceExhaustedError("nonce 2^64-1 is reserved; start a new handshake")
        if len(ciphertext) < TAGLEN:
            raise DecryptError("ciphertext shorter than the authentication tag")
        try:
            plaintext = aead.decrypt(self._nonce(n), ciphertext, ad)
        except InvalidTag:
            raise DecryptError("authentication failed (wrong key or tampered data)") from None
        self.n = n + 1
        return plaintext

    def encrypt(self, plaintext: bytes) -> bytes:
        """Encrypt a transport message (empty associated data)."""
        return self.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Decrypt a transport message (empty associated data)."""
        return self.decrypt_with_ad(b"", ciphertext)

    def rekey(self) -> None:
        """Rekey(): replace ``k`` by REKEY(k); ``n`` is deliberately not reset (spec 11.3)."""
        aead = self._aead or self._build_aead()
        if aead is None:
            raise NonceExhaustedError("cannot rekey a CipherState that has no key")
        self._key = self._cipher.rekey(aead)
        self._aead = None

    def __repr__(self) -> str:
        return f"CipherState({self._cipher.name}, has_key={self.has_key()}, n={self.n})"
