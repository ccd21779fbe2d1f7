"""The client's history at rest: each message body sealed on its own (AES-256-GCM).

The key is derived (HKDF-SHA-256) from the profile's identity secret, its
Noise static private key, so a byte search of the profile's files (database,
WAL, journal) finds no message text, and a record moved to another row, or
changed, fails to open. Only the body is sealed: who, when, which kind and
the delivery status stay readable, so the history can be listed and
searched by peer without opening every record.

A sealed body is ``0x01 || 12-byte random nonce || ciphertext and tag``; the
associated data binds it to its row: ``"noisewall-history-v1"`` and the
length-prefixed UTF-8 peer, direction and message id.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from noisewall.errors import InputError

VERSION = b"\x01"
_NONCE = 12
_INFO = b"noisewall-profile-history-v1"
_AD_DOMAIN = b"noisewall-history-v1"


class HistoryCipherError(InputError):
    """A history record does not open: another profile's key, or changed on disk."""


class HistoryCipher:
    """Seals and opens history bodies with a key derived from the profile's identity secret."""

    def __init__(self, identity_secret: bytes) -> None:
        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=_INFO).derive(identity_secret)
        self._aead = AESGCM(key)

    def seal(self, row: tuple[str, str, str], body: bytes) -> bytes:
        """Encrypt ``body`` for the history row ``(peer, direction, msg_id)``."""
        nonce = os.urandom(_NONCE)
        return VERSION + nonce + self._aead.encrypt(nonce, body, _associated_data(row))

    def open(self, row: tuple[str, str, str], sealed: bytes) -> bytes:
        """The body sealed for ``row``; :class:`HistoryCipherError` if it does not open."""
        if sealed[:1] != VERSION or len(sealed) < 1 + _NONCE + 16:
            raise HistoryCipherError(f"history record {row[2]!r} is not a sealed record")
        try:
            return self._aead.decrypt(sealed[1:1 + _NONCE], sealed[1 + _NONCE:],
                                      _associated_data(row))
        except InvalidTag:
            raise HistoryCipherError(f"history record {row[2]!r} failed to authenticate "
                                     "(another profile's key, or changed on disk)") from None


def _associated_data(row: tuple[str, str, str]) -> bytes:
    parts = [_AD_DOMAIN]
    for field in row:
        data = field.encode("utf-8")
        parts.append(struct.pack(">I", len(data)) + data)
    return b"".join(parts)
