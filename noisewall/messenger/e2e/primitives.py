"""The cryptographic configuration: Syndace's X3DH and Double Ratchet with noisewall's parameters.

Also the associated data every message authenticates, and a fast exact copy
of the ratchet state (the library deep-copies it on every decryption).
"""

from __future__ import annotations

import functools
import struct
from typing import Any, TypeVar

import x3dh
import xeddsa
from doubleratchet import (
    AuthenticationFailedException,
    DecryptionFailedException,
    DoSProtectionException,
    DoubleRatchet,
    EncryptedMessage,
)
from doubleratchet import Header as RatchetHeader
from doubleratchet.recommended import (
    HashFunction,
    aead_aes_hmac,
    diffie_hellman_ratchet_curve25519,
    kdf_hkdf,
    kdf_separate_hmacs,
)

DOS_PROTECTION_THRESHOLD = 1000
"""Most message keys skipped in one step (a larger gap is refused)."""
MAX_SKIPPED_MESSAGE_KEYS = 2000
"""Most skipped message keys stored per session (oldest dropped first)."""
KEY_SIZE = 32
X3DH_INFO = b"noisewall-e2e-x3dh-v1"

_DERIVED_PUB_CACHE = 1024
_AD_DOMAIN = b"noisewall-e2e-v1"
_CURVE25519_KEY_TYPE = b"\x05"


class X3DHState(x3dh.BaseState):
    """X3DH with manual prekey management: the client tops up the directory itself."""

    @staticmethod
    def _encode_public_key(key_format: x3dh.IdentityKeyFormat, pub: bytes) -> bytes:
        # Signal's encoding: a type byte for Curve25519 and the 32 key bytes.
        return _CURVE25519_KEY_TYPE + pub


class _RootKDF(kdf_hkdf.KDF):
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return b"noisewall-e2e-root-chain-v1"


class _MessageKDF(kdf_separate_hmacs.KDF):
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256


class _MessageAEAD(aead_aes_hmac.AEAD):
    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return b"noisewall-e2e-message-keys-v1"


class _DHRatchet(diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet):
    def __deepcopy__(self, memo: dict[int, Any]) -> _DHRatchet:
        # DoubleRatchet.decrypt_message works on a deep copy of this object and
        # keeps it only on success. The state is a small tree of the library's
        # own objects whose leaves are immutable (bytes, ints, classes), so
        # copying those objects is a deep copy, ~6x cheaper than copy.deepcopy.
        return clone_state(self)

    @staticmethod
    @functools.lru_cache(maxsize=_DERIVED_PUB_CACHE)
    def _derive_pub(priv: bytes) -> bytes:
        # The library derives the sending ratchet's public key from its private key
        # on every message; a ratchet key lives for many messages, so remember it.
        return diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet._derive_pub(priv)


_T = TypeVar("_T")
_STATE_LEAVES = (bytes, int, str, type, type(None))


def clone_state(obj: _T) -> _T:
    """Copy a tree of plain objects whose leaves are immutable; refuse anything else."""
    clone = object.__new__(type(obj))
    for name, value in vars(obj).items():
        if isinstance(value, _STATE_LEAVES):
            clone.__dict__[name] = value
        elif hasattr(value, "__dict__") and not isinstance(value, (list, dict, set)):
            clone.__dict__[name] = clone_state(value)
        else:
            raise TypeError(f"cannot clone ratchet state holding {type(value).__name__}")
    return clone


# Chain key = HMAC(CK, 0x02) then message key = HMAC(CK, 0x01), as in Signal.
_MESSAGE_CHAIN_CONSTANT = b"\x02\x01"


class Ratchet(DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: RatchetHeader) -> bytes:
        return (
            lp(associated_data)
            + header.ratchet_pub
            + struct.pack(">QQ", header.previous_sending_chain_length,
                          header.sending_chain_length)
        )


# The Double Ratchet configuration every session uses, in one place.
_RATCHET_CONFIG: dict[str, Any] = {
    "diffie_hellman_ratchet_class": _DHRatchet,
    "root_chain_kdf": _RootKDF,
    "message_chain_kdf": _MessageKDF,
    "message_chain_constant": _MESSAGE_CHAIN_CONSTANT,
    "dos_protection_threshold": DOS_PROTECTION_THRESHOLD,
    "max_num_skipped_message_keys": MAX_SKIPPED_MESSAGE_KEYS,
    "aead": _MessageAEAD,
}


def ratchet_from_json(data: Any) -> Ratchet:
    return Ratchet.from_json(data, **_RATCHET_CONFIG)


async def ratchet_encrypt_initial(
    shared_secret: bytes, recipient_ratchet_pub: bytes, plaintext: bytes, ad: bytes
) -> tuple[Ratchet, EncryptedMessage]:
    return await Ratchet.encrypt_initial_message(
        **_RATCHET_CONFIG,
        shared_secret=shared_secret,
        recipient_ratchet_pub=recipient_ratchet_pub,
        message=plaintext,
        associated_data=ad,
    )


async def ratchet_decrypt_initial(
    shared_secret: bytes, own_ratchet_priv: bytes, message: EncryptedMessage, ad: bytes
) -> tuple[Ratchet, bytes]:
    return await Ratchet.decrypt_initial_message(
        **_RATCHET_CONFIG,
        shared_secret=shared_secret,
        own_ratchet_priv=own_ratchet_priv,
        message=message,
        associated_data=ad,
    )


# Everything the library raises for a message that does not decrypt.
DECRYPT_FAILURES = (
    AuthenticationFailedException,
    DecryptionFailedException,
    DoSProtectionException,
    ValueError,  # a low-order ratchet key makes X25519 fail
    xeddsa.XEdDSAException,
)


def lp(data: bytes) -> bytes:
    """Length-prefixed bytes, so concatenations parse one way only."""
    return struct.pack(">I", len(data)) + data


def names_appendix(initiator: str, responder: str) -> bytes:
    return lp(initiator.encode("utf-8")) + lp(responder.encode("utf-8"))


def message_ad(session_ad: bytes, sender: str, recipient: str) -> bytes:
    return (_AD_DOMAIN + lp(session_ad) + lp(sender.encode("utf-8"))
            + lp(recipient.encode("utf-8")))
