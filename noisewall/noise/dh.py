"""Noise DH functions: ``25519`` and ``448`` (spec sections 12.1, 12.2) and ``P256``.

``P256`` is beyond the spec, as snow has it: NIST P-256 ECDH, public keys in
uncompressed SEC1 form (65 bytes, what goes into handshake messages), private
keys as the 32-byte big-endian scalar, and DH output the 32-byte x-coordinate.
All three are backed by the ``cryptography`` package.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x448 import X448PrivateKey, X448PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from noisewall.noise.errors import InvalidKeyError, unsupported

PrivateKey = X25519PrivateKey | X448PrivateKey | ec.EllipticCurvePrivateKey


class KeyPair:
    """A DH key pair. ``public`` is the raw public key; the private half never prints."""

    __slots__ = ("_dh", "_private", "public")

    def __init__(self, dh: DHFunction, private: PrivateKey, public: bytes) -> None:
        self._dh = dh
        self._private = private
        self.public = public

    def private_bytes(self) -> bytes:
        """The raw private key, for storing it; callers must keep it secret."""
        return self._dh.private_bytes(self._private)

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()}, private=<hidden>)"


class DHFunction(ABC):
    """A DH function: ``publen``-byte public keys, ``privlen``-byte private keys,
    ``dhlen``-byte shared secrets (Noise's DHLEN)."""

    def __init__(self, name: str, publen: int, privlen: int, dhlen: int) -> None:
        self.name = name
        self.publen = publen
        self.privlen = privlen
        self.dhlen = dhlen

    @abstractmethod
    def generate_keypair(self) -> KeyPair:
        """GENERATE_KEYPAIR(): a fresh random key pair."""

    @abstractmethod
    def _from_private(self, private: bytes) -> KeyPair: ...

    @abstractmethod
    def private_bytes(self, private: PrivateKey) -> bytes:
        """The raw encoding of one of this function's private keys."""

    @abstractmethod
    def _exchange(self, private: PrivateKey, public: bytes) -> bytes: ...

    def keypair_from_private(self, private: bytes) -> KeyPair:
        """Rebuild a key pair from its raw private key (for stored or test-vector keys)."""
        if len(private) != self.privlen:
            raise InvalidKeyError(
                f"{self.name} private key must be {self.privlen} bytes, got {len(private)}"
            )
        try:
            return self._from_private(private)
        except ValueError as exc:
            raise InvalidKeyError(f"{self.name} private key is not valid") from exc

    def check_public(self, public: bytes) -> None:
        """Raise :class:`InvalidKeyError` unless ``public`` has this function's length."""
        if len(public) != self.publen:
            raise InvalidKeyError(
                f"{self.name} public key must be {self.publen} bytes, got {len(public)}"
            )

    def dh(self, keypair: KeyPair, public: bytes) -> bytes:
        """DH(key_pair, public_key): the shared secret; invalid public keys are refused."""
        self.check_public(public)
        try:
            return self._exchange(keypair._private, public)
        except (ValueError, TypeError) as exc:
            # OpenSSL refuses low-order X25519/X448 points (all-zero output) and
            # P-256 points off the curve; Noise allows either refusal.
            raise InvalidKeyError(f"{self.name} DH failed: invalid public key") from exc

    def __repr__(self) -> str:
        return f"DHFunction({self.name})"


class _Montgomery(DHFunction):
    """X25519 or X448 (RFC 7748): raw keys of one length for everything."""

    def __init__(
        self,
        name: str,
        length: int,
        private_type: type[X25519PrivateKey] | type[X448PrivateKey],
        public_type: type[X25519PublicKey] | type[X448PublicKey],
    ) -> None:
        super().__init__(name, length, length, length)
        self._private_type = private_type
        self._public_type = public_type

    def generate_keypair(self) -> KeyPair:
        private = self._private_type.generate()
        return KeyPair(self, private, private.public_key().public_bytes_raw())

    def _from_private(self, private: bytes) -> KeyPair:
        key = self._private_type.from_private_bytes(private)
        return KeyPair(self, key, key.public_key().public_bytes_raw())

    def private_bytes(self, private: PrivateKey) -> bytes:
        assert isinstance(private, X25519PrivateKey | X448PrivateKey)
        return private.private_bytes_raw()

    def _exchange(self, private: PrivateKey, public: bytes) -> bytes:
        if isinstance(private, X25519PrivateKey):
            return private.exchange(X25519PublicKey.from_public_bytes(public))
        assert isinstance(private, X448PrivateKey)
        return private.exchange(X448PublicKey.from_public_bytes(public))


class _P256(DHFunction):
    """NIST P-256 ECDH with snow's encodings (see the module docstring)."""

    _curve = ec.SECP256R1()

    def __init__(self) -> None:
        super().__init__("P256", 65, 32, 32)

    def _pair(self, private: ec.EllipticCurvePrivateKey) -> KeyPair:
        public = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return KeyPair(self, private, public)

    def generate_keypair(self) -> KeyPair:
        return self._pair(ec.generate_private_key(self._curve))

    def _from_private(self, private: bytes) -> KeyPair:
        return self._pair(ec.derive_private_key(int.from_bytes(private, "big"), self._curve))

    def private_bytes(self, private: PrivateKey) -> bytes:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return private.private_numbers().private_value.to_bytes(self.privlen, "big")

    def _exchange(self, private: PrivateKey, public: bytes) -> bytes:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        if public[0] != 0x04:  # snow's encoding is uncompressed; refuse anything else
            raise ValueError("P-256 public key is not an uncompressed point")
        peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, public)
        return private.exchange(ec.ECDH(), peer)


DH_FUNCTIONS: dict[str, DHFunction] = {
    "25519": _Montgomery("25519", 32, X25519PrivateKey, X25519PublicKey),
    "448": _Montgomery("448", 56, X448PrivateKey, X448PublicKey),
    "P256": _P256(),
}


def dh_function(name: str) -> DHFunction:
    """Look up a DH function by its protocol-name section (``25519``, ``448`` or ``P256``)."""
    try:
        return DH_FUNCTIONS[name]
    except KeyError:
        raise unsupported("DH function", name, DH_FUNCTIONS) from None
