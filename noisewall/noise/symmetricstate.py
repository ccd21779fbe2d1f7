"""The SymmetricState object (spec section 5.2)."""

from __future__ import annotations

from noisewall.noise.ciphers import KEYLEN
from noisewall.noise.cipherstate import CipherState
from noisewall.noise.protocol import NoiseProtocol


class SymmetricState:
    """The chaining key ``ck``, handshake hash ``h`` and the handshake's CipherState."""

    __slots__ = ("_hash", "_protocol", "cipher_state", "ck", "h")

    def __init__(self, protocol: NoiseProtocol) -> None:
        """InitializeSymmetric(protocol_name)."""
        self._protocol = protocol
        self._hash = protocol.hash
        name = protocol.name.encode("ascii")
        if len(name) <= self._hash.hashlen:
            self.h = name.ljust(self._hash.hashlen, b"\x00")
        else:
            self.h = self._hash.hash(name)
        self.ck = self.h
        self.cipher_state = CipherState(protocol.cipher)

    def mix_key(self, input_key_material: bytes) -> None:
        """MixKey(input_key_material)."""
        self.ck, temp_k = self._hash.hkdf(self.ck, input_key_material, 2)
        self.cipher_state.initialize_key(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        """MixHash(data)."""
        self.h = self._hash.hash(self.h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """MixKeyAndHash(input_key_material), used for PSKs."""
        self.ck, temp_h, temp_k = self._hash.hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cipher_state.initialize_key(temp_k[:KEYLEN])

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash(plaintext)."""
        ciphertext = self.cipher_state.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash(ciphertext)."""
        plaintext = self.cipher_state.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split(): the initiator-to-responder and responder-to-initiator CipherStates."""
        temp_k1, temp_k2 = self._hash.hkdf(self.ck, b"", 2)
        cipher = self._protocol.cipher
        return CipherState(cipher, temp_k1[:KEYLEN]), CipherState(cipher, temp_k2[:KEYLEN])
