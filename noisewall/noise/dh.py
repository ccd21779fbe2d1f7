"""Noise DH functions (spec section 12.1 and 12.2): ``25519`` and ``448``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x448 import X448PrivateKey, X448PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from noisewall.noise.errors import InvalidKeyError, unsupported


class _PrivateKey(Protocol):
    def private_bytes_raw(self) -> bytes: ...


class KeyPair:
    """A DH key pair. ``public`` is the raw public key; the private half never prints."""

    __slots__ = ("_private", "public")

    def __init__(self, private: _PrivateKey, public: bytes) -> None:
        self._private = private
        self.public = public

    def private_bytes(self) -> bytes:
        """The raw private key, for storing it; callers must keep it secret."""
        return self._private.private_bytes_raw()

    def __repr__(self) -> str:
        return f"KeyPair(public={self.public.hex()}, private=<hidden>)"


@dataclass(frozen=True)
class DHFunction:
    """One of the spec's DH functions, backed by the ``cryptography`` package."""

    name: str
    dhlen: int
    _private_type: type[X25519PrivateKey] | type[X448PrivateKey]
    _public_type: type[X25519PublicKey] | type[X448PublicKey]

    def generate_keypair(self) -> KeyPair:
        """GENERATE_KEYPAIR(): a fresh random key pair."""
        private = self._private_type.generate()
        return KeyPair(private, private.public_key().public_bytes_raw())

    def keypair_from_private(self, private: bytes) -> KeyPair:
        """Rebuild a key pair from its raw private key (for stored or test-vector keys)."""
        if len(private) != self.dhlen:
            raise InvalidKeyError(
                f"{self.name} private key must be {self.dhlen} bytes, got {len(private)}"
            )
        key = self._private_type.from_private_bytes(private)
        return KeyPair(key, key.public_key().public_bytes_raw())

    def check_public(self, public: bytes) -> None:
        """Raise :class:`InvalidKeyError` unless ``public`` has this function's length."""
        if len(public) != self.dhlen:
            raise InvalidKeyError(
                f"{self.name} public key must be {self.dhlen} bytes, got {len(public)}"
            )

    def dh(self, keypair: KeyPair, public: bytes) -> bytes:
        """DH(key_pair, public_key): the shared secret; invalid public keys are refused."""
        self.check_public(public)
        try:
            # mypy cannot see that the pair types line up; the table below pairs them.
            peer = self._public_type.from_public_bytes(public)
            return keypair._private.exchange(peer)  # type: ignore[attr-defined,no-any-return]
        except ValueError as exc:
            # OpenSSL refuses low-order points (all-zero output); Noise allows that.
            raise InvalidKeyError(f"{self.name} DH failed: invalid public key") from exc


DH_FUNCTIONS: dict[str, DHFunction] = {
    "25519": DHFunction("25519", 32, X25519PrivateKey, X25519PublicKey),
    "448": DHFunction("448", 56, X448PrivateKey, X448PublicKey),
}


def dh_function(name: str) -> DHFunction:
    """Look up a DH function by its protocol-name section (``25519`` or ``448``)."""
    try:
        return DH_FUNCTIONS[name]
    except KeyError:
        raise unsupported("DH function", name, DH_FUNCTIONS) from None
