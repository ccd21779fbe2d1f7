"""End-to-end encryption: X3DH key agreement and Double Ratchet sessions.

The Signal protocol is not implemented here: the key agreement is Syndace's
``X3DH`` package and the sessions are its ``DoubleRatchet`` package, configured
with that package's recommended primitives (X25519 ratchet, HKDF-SHA-256 root
chain, HMAC-SHA-256 message chains, AES-256-CBC + HMAC-SHA-256 AEAD). This
module only chooses parameters, serializes state, and defines the wire shapes.

Wire shapes (all binary fields standard base64 with padding):

* A **bundle** (``E2EIdentity.publish_bundle``)::

      {"identity_key": b64, "signed_prekey": b64,
       "signed_prekey_signature": b64, "one_time_prekeys": [b64, ...]}

  The directory hands an initiator the same shape with zero or one entry in
  ``one_time_prekeys`` (each one-time prekey is handed out once).

* An **envelope** (``E2ESessions.encrypt``)::

      {"v": 1,
       "x3dh": null | {"identity_key": b64, "ephemeral_key": b64,
                       "signed_prekey": b64, "one_time_prekey": b64 | null},
       "ratchet": {"dh": b64, "pn": int, "n": int},
       "ct": b64}

  ``x3dh`` is set on every message the initiator of a session sends until it
  has decrypted a reply on that session (so a lost or late first message
  never leaves the responder without the key agreement), as in Signal.

Associated data. X3DH's associated data is ``0x05 || IK_initiator || 0x05 ||
IK_responder`` followed by the length-prefixed UTF-8 names of the initiator
and the responder. Every Double Ratchet message then authenticates
``"noisewall-e2e-v1" || len || X3DH-AD || len || sender name || len ||
recipient name`` plus the ratchet header (DH public key, PN, N). An envelope
replayed under other names, reflected back to its sender, or with any header
field changed fails to decrypt.

Sessions per peer. A peer's record holds the current session (used to send)
and up to ``MAX_ARCHIVED_SESSIONS`` earlier ones, which are still tried when
decrypting and promoted to current when one works. This resolves two parties
starting sessions with each other at the same time, and a peer that starts
over (new install, lost state). The X3DH ephemeral keys of sessions a peer
started are remembered, so a replayed first message of a discarded session is
refused rather than used to reset the conversation.

Identity keys are trust-on-first-use and a changed identity key is accepted
(a new session replaces the old); :meth:`E2ESessions.peer_identity_key`
exposes the key so a client can show a fingerprint or warn on a change.

Nothing in this module logs; no error message contains key material or
plaintext.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import sqlite3
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeVar

import x3dh
import xeddsa
from doubleratchet import (
    AuthenticationFailedException,
    DecryptionFailedException,
    DoSProtectionException,
    DoubleRatchet,
    DuplicateMessageException,
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

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_ARCHIVED_SESSIONS",
    "BundleError",
    "DecryptionError",
    "DuplicateMessageError",
    "E2EError",
    "E2EIdentity",
    "E2ESessions",
    "KeyAgreementError",
    "MalformedEnvelopeError",
    "NoSessionError",
    "SessionConflictError",
    "SessionStore",
    "SqliteSessionStore",
    "StateError",
    "StoredState",
    "fingerprint",
    "parse_bundle",
]

ENVELOPE_VERSION = 1
MAX_ARCHIVED_SESSIONS = 4
"""Earlier sessions kept per peer besides the current one."""

DEFAULT_ONE_TIME_PREKEYS = 100
MAX_LOCAL_ONE_TIME_PREKEYS = 300
"""Private one-time prekeys kept at most; the oldest go first beyond this."""

SIGNED_PREKEY_MAX_AGE = 7 * 24 * 3600
"""Default rotation period of the signed prekey, in seconds."""

DOS_PROTECTION_THRESHOLD = 1000
"""Most message keys skipped in one step (a larger gap is refused)."""
MAX_SKIPPED_MESSAGE_KEYS = 2000
"""Most skipped message keys stored per session (oldest dropped first)."""

_MAX_KNOWN_EPHEMERALS = 64
_DERIVED_PUB_CACHE = 1024
_SAVE_ATTEMPTS = 3
_KEY_SIZE = 32
_SIGNATURE_SIZE = 64
_MAX_COUNTER = 2**63 - 1

_X3DH_INFO = b"noisewall-e2e-x3dh-v1"
_AD_DOMAIN = b"noisewall-e2e-v1"
_CURVE25519_KEY_TYPE = b"\x05"


# --------------------------------------------------------------------- errors


class E2EError(Exception):
    """Base class of every end-to-end encryption error."""


class BundleError(E2EError):
    """A peer's key bundle is malformed or its signed prekey signature is invalid."""


class MalformedEnvelopeError(E2EError):
    """An envelope does not have the documented JSON shape."""


class KeyAgreementError(E2EError):
    """The X3DH agreement of a first message failed.

    Typically the one-time prekey it names was already used (or dropped), or
    its signed prekey was rotated out more than one period ago.
    """


class DecryptionError(E2EError):
    """A message failed to authenticate or decrypt (tampered, wrong session, replayed)."""


class DuplicateMessageError(DecryptionError):
    """The message was already decrypted once: a replay."""


class NoSessionError(DecryptionError):
    """A non-initial message arrived from a peer there is no session with."""


class SessionConflictError(E2EError):
    """The stored state changed underneath (another process used the same profile)."""


class StateError(E2EError):
    """Stored identity or session state cannot be parsed."""


# ------------------------------------------------------------ library classes


class _X3DHState(x3dh.BaseState):
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
        return _clone_state(self)

    @staticmethod
    @functools.lru_cache(maxsize=_DERIVED_PUB_CACHE)
    def _derive_pub(priv: bytes) -> bytes:
        # The library derives the sending ratchet's public key from its private key
        # on every message; a ratchet key lives for many messages, so remember it.
        return diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet._derive_pub(priv)


_T = TypeVar("_T")
_STATE_LEAVES = (bytes, int, str, type, type(None))


def _clone_state(obj: _T) -> _T:
    """Copy a tree of plain objects whose leaves are immutable; refuse anything else."""
    clone = object.__new__(type(obj))
    for name, value in vars(obj).items():
        if isinstance(value, _STATE_LEAVES):
            clone.__dict__[name] = value
        elif hasattr(value, "__dict__") and not isinstance(value, (list, dict, set)):
            clone.__dict__[name] = _clone_state(value)
        else:
            raise TypeError(f"cannot clone ratchet state holding {type(value).__name__}")
    return clone


# Chain key = HMAC(CK, 0x02) then message key = HMAC(CK, 0x01), as in Signal.
_MESSAGE_CHAIN_CONSTANT = b"\x02\x01"


class _Ratchet(DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: RatchetHeader) -> bytes:
        return (
            _lp(associated_data)
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


def _ratchet_from_json(data: Any) -> _Ratchet:
    return _Ratchet.from_json(data, **_RATCHET_CONFIG)


async def _ratchet_encrypt_initial(
    shared_secret: bytes, recipient_ratchet_pub: bytes, plaintext: bytes, ad: bytes
) -> tuple[_Ratchet, EncryptedMessage]:
    return await _Ratchet.encrypt_initial_message(
        **_RATCHET_CONFIG,
        shared_secret=shared_secret,
        recipient_ratchet_pub=recipient_ratchet_pub,
        message=plaintext,
        associated_data=ad,
    )


async def _ratchet_decrypt_initial(
    shared_secret: bytes, own_ratchet_priv: bytes, message: EncryptedMessage, ad: bytes
) -> tuple[_Ratchet, bytes]:
    return await _Ratchet.decrypt_initial_message(
        **_RATCHET_CONFIG,
        shared_secret=shared_secret,
        own_ratchet_priv=own_ratchet_priv,
        message=message,
        associated_data=ad,
    )


# Everything the library raises for a message that does not decrypt.
_DECRYPT_FAILURES = (
    AuthenticationFailedException,
    DecryptionFailedException,
    DoSProtectionException,
    ValueError,  # a low-order ratchet key makes X25519 fail
    xeddsa.XEdDSAException,
)


# -------------------------------------------------------------------- helpers


def _lp(data: bytes) -> bytes:
    """Length-prefixed bytes, so concatenations parse one way only."""
    return struct.pack(">I", len(data)) + data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str, size: int | None, error: type[E2EError]) -> bytes:
    if not isinstance(value, str):
        raise error(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{what} is not valid base64") from None
    if size is not None and len(data) != size:
        raise error(f"{what} must be {size} bytes, not {len(data)}")
    return data


def _name_bytes(name: object, what: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise E2EError(f"{what} must be a non-empty string")
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        raise E2EError(f"{what} is not valid UTF-8") from None
    if len(data) > 0xFFFF:
        raise E2EError(f"{what} is too long")
    return data


def _names_appendix(initiator: str, responder: str) -> bytes:
    return _lp(initiator.encode("utf-8")) + _lp(responder.encode("utf-8"))


def _message_ad(session_ad: bytes, sender: str, recipient: str) -> bytes:
    return (_AD_DOMAIN + _lp(session_ad) + _lp(sender.encode("utf-8"))
            + _lp(recipient.encode("utf-8")))


def fingerprint(identity_key: bytes) -> str:
    """A human-comparable fingerprint of an identity public key (64 hex digits in groups)."""
    digest = hashlib.sha256(b"noisewall-e2e-fingerprint" + identity_key).hexdigest()
    return " ".join(digest[i:i + 4] for i in range(0, len(digest), 4))


def _json_load(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise StateError(f"stored {what} is not JSON") from None
    if not isinstance(data, dict):
        raise StateError(f"stored {what} is not a JSON object")
    return data


def _json_dump(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


# -------------------------------------------------------------------- bundles


def parse_bundle(bundle: Mapping[str, Any]) -> x3dh.Bundle:
    """Validate a bundle dict (shape, key sizes, signed prekey signature) and convert it.

    Raises :class:`BundleError`. The directory may use this to check uploads.
    """
    if not isinstance(bundle, Mapping):
        raise BundleError("a bundle must be a JSON object")
    identity_key = _unb64(bundle.get("identity_key"), "identity_key", _KEY_SIZE, BundleError)
    signed_prekey = _unb64(bundle.get("signed_prekey"), "signed_prekey", _KEY_SIZE, BundleError)
    signature = _unb64(bundle.get("signed_prekey_signature"), "signed_prekey_signature",
                       _SIGNATURE_SIZE, BundleError)
    raw_prekeys = bundle.get("one_time_prekeys", [])
    if not isinstance(raw_prekeys, list):
        raise BundleError("one_time_prekeys must be a list")
    prekeys = frozenset(
        _unb64(p, "one_time_prekeys[]", _KEY_SIZE, BundleError) for p in raw_prekeys
    )
    try:
        ed_identity = xeddsa.curve25519_pub_to_ed25519_pub(identity_key, False)
        valid = xeddsa.ed25519_verify(
            signature, ed_identity,
            _X3DHState._encode_public_key(x3dh.IdentityKeyFormat.CURVE_25519, signed_prekey),
        )
    except (ValueError, xeddsa.XEdDSAException):
        valid = False
    if not valid:
        raise BundleError("the signed prekey signature does not verify")
    return x3dh.Bundle(identity_key=identity_key, signed_pre_key=signed_prekey,
                       signed_pre_key_sig=signature, pre_keys=prekeys)


def _bundle_to_dict(bundle: x3dh.Bundle, prekeys: list[bytes]) -> dict[str, Any]:
    return {
        "identity_key": _b64(bundle.identity_key),
        "signed_prekey": _b64(bundle.signed_pre_key),
        "signed_prekey_signature": _b64(bundle.signed_pre_key_sig),
        "one_time_prekeys": [_b64(p) for p in prekeys],
    }


# ------------------------------------------------------------------- identity


class E2EIdentity:
    """An account's X3DH state: identity key, signed prekey (rotating), one-time prekeys.

    Pure in-memory state, serializable with :meth:`to_json`/:meth:`from_json`.
    :class:`E2ESessions` persists it (use its ``top_up_one_time_prekeys`` and
    ``rotate_signed_prekey_if_due`` so changes are saved before they are
    published).
    """

    def __init__(self, account: str, state: _X3DHState, prekey_order: list[bytes]) -> None:
        _name_bytes(account, "account")
        self._account = account
        self._state = state
        self._prekey_order = prekey_order
        self._identity_key = state.bundle.identity_key
        self._sync_prekey_order()

    @classmethod
    def create(cls, account: str,
               one_time_prekeys: int = DEFAULT_ONE_TIME_PREKEYS) -> E2EIdentity:
        """A fresh identity for ``account`` with ``one_time_prekeys`` one-time prekeys."""
        state = _X3DHState.create(x3dh.IdentityKeyFormat.CURVE_25519,
                                  x3dh.HashFunction.SHA_256, _X3DH_INFO)
        identity = cls(account, state, [])
        identity.new_one_time_prekeys(one_time_prekeys)
        return identity

    @classmethod
    def load_or_create(cls, store: SessionStore, account: str,
                       one_time_prekeys: int = DEFAULT_ONE_TIME_PREKEYS) -> E2EIdentity:
        """The identity saved in ``store``, or a new one, saved there at once."""
        stored = store.load_identity()
        if stored is not None:
            identity = cls.from_json(stored.state)
            if identity.account != account:
                raise StateError("the stored identity belongs to another account")
            return identity
        identity = cls.create(account, one_time_prekeys)
        store.save_identity(identity.to_json(), None)
        return identity

    # -- serialization

    def to_json(self) -> str:
        """The full private state as a JSON string (store it like a private key)."""
        return _json_dump({
            "v": 1,
            "account": self._account,
            "x3dh": dict(self._state.json),
            "prekey_order": [_b64(p) for p in self._prekey_order],
        })

    @classmethod
    def from_json(cls, text: str) -> E2EIdentity:
        """Restore an identity saved with :meth:`to_json`; raises :class:`StateError`."""
        data = _json_load(text, "identity")
        if data.get("v") != 1:
            raise StateError("unsupported identity state version")
        account = data.get("account")
        order = data.get("prekey_order", [])
        if not isinstance(account, str) or not isinstance(order, list):
            raise StateError("stored identity is malformed")
        try:
            state, _ = _X3DHState.from_json(
                data["x3dh"], x3dh.IdentityKeyFormat.CURVE_25519,
                x3dh.HashFunction.SHA_256, _X3DH_INFO)
            prekey_order = [_unb64(p, "prekey", _KEY_SIZE, StateError) for p in order]
            return cls(account, state, prekey_order)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"stored identity is malformed ({type(exc).__name__})") from None

    def _adopt(self, other: E2EIdentity) -> None:
        self._account = other._account
        self._state = other._state
        self._prekey_order = other._prekey_order
        self._identity_key = other._identity_key

    def _sync_prekey_order(self) -> None:
        visible = self._state.bundle.pre_keys
        order = [p for p in self._prekey_order if p in visible]
        known = set(order)
        order.extend(sorted(p for p in visible if p not in known))
        self._prekey_order = order

    # -- public view

    @property
    def account(self) -> str:
        """The account name this identity belongs to."""
        return self._account

    @property
    def identity_key(self) -> bytes:
        """The identity public key (Curve25519, 32 bytes)."""
        return self._identity_key

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of :attr:`identity_key`."""
        return fingerprint(self.identity_key)

    def publish_bundle(self, include_one_time_prekeys: bool = True) -> dict[str, Any]:
        """The public bundle as JSON-able dict (see the module docstring).

        Publish it whole at registration. After a signed prekey rotation pass
        ``include_one_time_prekeys=False`` (prekeys the directory already
        handed out must not be offered again); top-ups upload only the keys
        :meth:`new_one_time_prekeys` returned.
        """
        bundle = self._state.bundle
        return _bundle_to_dict(bundle, list(self._prekey_order) if include_one_time_prekeys
                               else [])

    @property
    def one_time_prekey_count(self) -> int:
        """One-time prekeys whose private halves are held (not yet used by a first message)."""
        return len(self._prekey_order)

    def needs_replenish(self, threshold: int, available: int | None = None) -> bool:
        """Whether fewer than ``threshold`` one-time prekeys remain.

        ``available`` is the directory's remaining stock when known (its
        ``publish_keys`` answer gives it); otherwise the local count is used,
        which overestimates the directory's stock (keys handed out to
        initiators that never wrote stay local).
        """
        count = self.one_time_prekey_count if available is None else available
        return count < threshold

    def new_one_time_prekeys(self, n: int) -> list[str]:
        """Generate ``n`` one-time prekeys; returns their public halves (base64) to upload.

        Beyond ``MAX_LOCAL_ONE_TIME_PREKEYS`` the oldest private prekeys are
        dropped (a first message that uses one then fails to agree).
        """
        if n < 0:
            raise ValueError("n must not be negative")
        before = self._state.bundle.pre_keys
        self._state.generate_pre_keys(n)
        new = sorted(self._state.bundle.pre_keys - before)
        self._prekey_order.extend(new)
        excess = len(self._prekey_order) - MAX_LOCAL_ONE_TIME_PREKEYS
        if excess > 0:
            for old in self._prekey_order[:excess]:
                self._state.delete_pre_key(old)
            del self._prekey_order[:excess]
        kept = set(self._prekey_order)
        return [_b64(p) for p in new if p in kept]

    def signed_prekey_age(self) -> int:
        """Seconds since the signed prekey was generated."""
        return self._state.signed_pre_key_age()

    def rotate_signed_prekey(self) -> None:
        """Replace the signed prekey; the previous one is kept for one more rotation."""
        self._state.rotate_signed_pre_key()

    def _consume_one_time_prekey(self, pub: bytes) -> None:
        self._state.delete_pre_key(pub)
        self._prekey_order = [p for p in self._prekey_order if p != pub]


# ---------------------------------------------------------------------- store


class StoredState(NamedTuple):
    """A stored state and its version (1 after the first save, +1 on each save)."""

    state: str
    version: int


class SessionStore(Protocol):
    """Where :class:`E2ESessions` keeps the identity and per-peer session records.

    Saves are compare-and-swap: ``expected_version`` is the version the caller
    loaded (``None`` for "must not exist yet"); a mismatch raises
    :class:`SessionConflictError`. After a successful save the version is
    ``(expected_version or 0) + 1``.
    """

    def load_identity(self) -> StoredState | None: ...

    def save_identity(self, state: str, expected_version: int | None) -> int: ...

    def load_session(self, peer: str) -> StoredState | None: ...

    def session_version(self, peer: str) -> int | None:
        """The stored version of ``peer``'s record (None if there is none): a cheap check."""
        ...

    def save_session(self, peer: str, state: str, expected_version: int | None,
                     identity: tuple[str, int | None] | None = None) -> int:
        """Save a session record, and atomically with it the identity if given."""
        ...

    def delete_session(self, peer: str) -> None: ...

    def peers(self) -> list[str]: ...

    def atomic(self) -> AbstractContextManager[None]:
        """A block whose saves (and the caller's own writes) commit together or not at all."""
        ...


class SqliteSessionStore:
    """:class:`SessionStore` in the profile's SQLite (tables ``e2e_identity``, ``e2e_sessions``).

    Each save is atomic (a SAVEPOINT) and is committed at once, unless the
    caller already has a transaction open on the connection, in which case it
    becomes part of that transaction (and the caller commits).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        with self.atomic():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS e2e_identity ("
                " id INTEGER PRIMARY KEY CHECK (id = 1),"
                " state TEXT NOT NULL,"
                " version INTEGER NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS e2e_sessions ("
                " peer TEXT PRIMARY KEY,"
                " state TEXT NOT NULL,"
                " version INTEGER NOT NULL,"
                " updated_at REAL NOT NULL)"
            )

    def atomic(self) -> _Savepoint:
        """A SAVEPOINT on the connection: nested in the caller's transaction, if any."""
        return _Savepoint(self._db)

    def load_identity(self) -> StoredState | None:
        row = self._db.execute("SELECT state, version FROM e2e_identity WHERE id = 1").fetchone()
        return None if row is None else StoredState(row[0], row[1])

    def save_identity(self, state: str, expected_version: int | None) -> int:
        with self.atomic():
            return self._write_identity(state, expected_version)

    def _write_identity(self, state: str, expected_version: int | None) -> int:
        if expected_version is None:
            cursor = self._db.execute(
                "INSERT INTO e2e_identity (id, state, version) VALUES (1, ?, 1)"
                " ON CONFLICT (id) DO NOTHING", (state,))
        else:
            cursor = self._db.execute(
                "UPDATE e2e_identity SET state = ?, version = version + 1"
                " WHERE id = 1 AND version = ?", (state, expected_version))
        if cursor.rowcount != 1:
            raise SessionConflictError("the stored identity changed concurrently")
        return (expected_version or 0) + 1

    def load_session(self, peer: str) -> StoredState | None:
        row = self._db.execute("SELECT state, version FROM e2e_sessions WHERE peer = ?",
                               (peer,)).fetchone()
        return None if row is None else StoredState(row[0], row[1])

    def session_version(self, peer: str) -> int | None:
        row = self._db.execute("SELECT version FROM e2e_sessions WHERE peer = ?",
                               (peer,)).fetchone()
        return None if row is None else int(row[0])

    def save_session(self, peer: str, state: str, expected_version: int | None,
                     identity: tuple[str, int | None] | None = None) -> int:
        with self.atomic():
            if expected_version is None:
                cursor = self._db.execute(
                    "INSERT INTO e2e_sessions (peer, state, version, updated_at)"
                    " VALUES (?, ?, 1, ?) ON CONFLICT (peer) DO NOTHING",
                    (peer, state, time.time()))
            else:
                cursor = self._db.execute(
                    "UPDATE e2e_sessions SET state = ?, version = version + 1, updated_at = ?"
                    " WHERE peer = ? AND version = ?",
                    (state, time.time(), peer, expected_version))
            if cursor.rowcount != 1:
                raise SessionConflictError("the stored session changed concurrently")
            if identity is not None:
                self._write_identity(*identity)
        return (expected_version or 0) + 1

    def delete_session(self, peer: str) -> None:
        with self.atomic():
            self._db.execute("DELETE FROM e2e_sessions WHERE peer = ?", (peer,))

    def peers(self) -> list[str]:
        return [row[0] for row in
                self._db.execute("SELECT peer FROM e2e_sessions ORDER BY peer")]


class _Savepoint:
    """A SAVEPOINT that works in every sqlite3 isolation mode."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("SAVEPOINT e2e_store")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._db.execute("ROLLBACK TO e2e_store")
        self._db.execute("RELEASE e2e_store")


# ------------------------------------------------------------------- sessions


@dataclass
class _Session:
    ratchet: _Ratchet
    ad: bytes  # X3DH associated data (identity keys and names)
    origin_ephemeral: bytes  # the X3DH ephemeral key that started this session
    peer_identity_key: bytes
    pending: x3dh.Header | None  # initiator: X3DH header to resend until a reply
    _fixed_json: str = field(default="", repr=False, compare=False)

    def to_json(self) -> str:
        # Hot path: every message saves its session. The fields fixed at the
        # session's start are serialized once, and the library's own JSON text
        # of the ratchet is spliced in rather than parsed and dumped again.
        if not self._fixed_json:
            self._fixed_json = _json_dump({
                "ad": _b64(self.ad),
                "ephemeral": _b64(self.origin_ephemeral),
                "peer_identity_key": _b64(self.peer_identity_key),
            })[:-1]
        pending = "null" if self.pending is None else _json_dump(
            _x3dh_header_to_json(self.pending))
        return (f'{self._fixed_json},"pending":{pending},'
                f'"ratchet":{self.ratchet.model.model_dump_json()}}}')

    @classmethod
    def from_json(cls, data: Any) -> _Session:
        if not isinstance(data, dict):
            raise StateError("stored session is malformed")
        pending = data.get("pending")
        return cls(
            ratchet=_ratchet_from_json(data["ratchet"]),
            ad=_unb64(data["ad"], "ad", None, StateError),
            origin_ephemeral=_unb64(data["ephemeral"], "ephemeral", _KEY_SIZE, StateError),
            peer_identity_key=_unb64(data["peer_identity_key"], "peer_identity_key",
                                     _KEY_SIZE, StateError),
            pending=None if pending is None else _x3dh_header_from_json(pending, StateError),
        )


@dataclass
class _CachedRecord:
    record: _Record
    version: int | None  # as last read or written; a dirty record is ahead of it
    dirty: bool = False  # changed by a deferred save, not yet in the store


@dataclass
class _Record:
    sessions: list[_Session] = field(default_factory=list)  # [0] is the current one
    known_ephemerals: list[bytes] = field(default_factory=list)

    def to_json(self) -> str:
        head = _json_dump({"known_ephemerals": [_b64(e) for e in self.known_ephemerals],
                           "v": 1})
        sessions = ",".join(session.to_json() for session in self.sessions)
        return f'{head[:-1]},"sessions":[{sessions}]}}'

    @classmethod
    def from_json(cls, text: str) -> _Record:
        data = _json_load(text, "session")
        if data.get("v") != 1:
            raise StateError("unsupported session state version")
        try:
            return cls(
                sessions=[_Session.from_json(s) for s in data["sessions"]],
                known_ephemerals=[_unb64(e, "ephemeral", _KEY_SIZE, StateError)
                                  for e in data["known_ephemerals"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"stored session is malformed ({type(exc).__name__})") from None

    def promote(self, session: _Session) -> None:
        self.sessions.remove(session)
        self.sessions.insert(0, session)

    def add(self, session: _Session) -> None:
        self.sessions.insert(0, session)
        del self.sessions[1 + MAX_ARCHIVED_SESSIONS:]
        if session.origin_ephemeral not in self.known_ephemerals:
            self.known_ephemerals.append(session.origin_ephemeral)
            del self.known_ephemerals[:-_MAX_KNOWN_EPHEMERALS]


def _x3dh_header_to_json(header: x3dh.Header) -> dict[str, Any]:
    return {
        "identity_key": _b64(header.identity_key),
        "ephemeral_key": _b64(header.ephemeral_key),
        "signed_prekey": _b64(header.signed_pre_key),
        "one_time_prekey": None if header.pre_key is None else _b64(header.pre_key),
    }


def _x3dh_header_from_json(data: object, error: type[E2EError]) -> x3dh.Header:
    if not isinstance(data, dict):
        raise error("x3dh must be an object or null")
    pre_key = data.get("one_time_prekey")
    return x3dh.Header(
        identity_key=_unb64(data.get("identity_key"), "x3dh.identity_key", _KEY_SIZE, error),
        ephemeral_key=_unb64(data.get("ephemeral_key"), "x3dh.ephemeral_key", _KEY_SIZE, error),
        signed_pre_key=_unb64(data.get("signed_prekey"), "x3dh.signed_prekey", _KEY_SIZE, error),
        pre_key=None if pre_key is None
        else _unb64(pre_key, "x3dh.one_time_prekey", _KEY_SIZE, error),
    )


class _Envelope(NamedTuple):
    x3dh: x3dh.Header | None
    message: EncryptedMessage


def _envelope_to_json(pending: x3dh.Header | None, message: EncryptedMessage) -> dict[str, Any]:
    header = message.header
    return {
        "v": ENVELOPE_VERSION,
        "x3dh": None if pending is None else _x3dh_header_to_json(pending),
        "ratchet": {
            "dh": _b64(header.ratchet_pub),
            "pn": header.previous_sending_chain_length,
            "n": header.sending_chain_length,
        },
        "ct": _b64(message.ciphertext),
    }


def _counter(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNTER:
        raise MalformedEnvelopeError(f"{what} must be a non-negative integer")
    return value


def _parse_envelope(envelope: object) -> _Envelope:
    if not isinstance(envelope, Mapping):
        raise MalformedEnvelopeError("an envelope must be a JSON object")
    if envelope.get("v") != ENVELOPE_VERSION:
        raise MalformedEnvelopeError("unsupported envelope version")
    raw_x3dh = envelope.get("x3dh")
    header = (None if raw_x3dh is None
              else _x3dh_header_from_json(raw_x3dh, MalformedEnvelopeError))
    ratchet = envelope.get("ratchet")
    if not isinstance(ratchet, Mapping):
        raise MalformedEnvelopeError("ratchet must be an object")
    ratchet_header = RatchetHeader(
        ratchet_pub=_unb64(ratchet.get("dh"), "ratchet.dh", _KEY_SIZE, MalformedEnvelopeError),
        previous_sending_chain_length=_counter(ratchet.get("pn"), "ratchet.pn"),
        sending_chain_length=_counter(ratchet.get("n"), "ratchet.n"),
    )
    ciphertext = _unb64(envelope.get("ct"), "ct", None, MalformedEnvelopeError)
    if not ciphertext:
        raise MalformedEnvelopeError("ct must not be empty")
    return _Envelope(header, EncryptedMessage(header=ratchet_header, ciphertext=ciphertext))


class E2ESessions:
    """Double Ratchet sessions of one account with its peers, persisted in a :class:`SessionStore`.

    Every :meth:`encrypt` and :meth:`decrypt` checks the peer's record in the
    store and saves it before returning, so new objects over the same
    database continue a conversation, and two processes sharing a profile
    never fork a ratchet (a lost race raises :class:`SessionConflictError`
    after a few retries). Calls for one peer are serialized within a process.

    Records stay parsed in memory between calls; a call only reads the stored
    version, and re-reads the record when another writer changed it.

    ``decrypt(..., persist=False)`` defers the save: the caller decrypts a
    batch, then calls :meth:`persist` inside its own transaction (with its
    history writes) and acknowledges the batch only after that commits, or
    calls :meth:`discard_unsaved` if it fails, so the batch is decrypted again
    when redelivered. Encryption is always saved before the envelope is
    returned: a ratchet step that was used must never be forgotten, or its
    message key would encrypt a second message.
    """

    def __init__(self, identity: E2EIdentity, store: SessionStore) -> None:
        self._identity = identity
        self._store = store
        self._records: dict[str, _CachedRecord] = {}
        self._peer_locks: dict[str, asyncio.Lock] = {}
        self._identity_lock = asyncio.Lock()
        stored = store.load_identity()
        if stored is None:
            self._identity_version = store.save_identity(identity.to_json(), None)
        else:
            saved = E2EIdentity.from_json(stored.state)
            if saved.identity_key != identity.identity_key:
                raise StateError("the store holds a different identity")
            identity._adopt(saved)
            self._identity_version = stored.version

    @property
    def identity(self) -> E2EIdentity:
        """The account's identity (kept in step with the store)."""
        return self._identity

    @property
    def account(self) -> str:
        """The account name (the sender name bound into associated data)."""
        return self._identity.account

    def _lock(self, peer: str) -> asyncio.Lock:
        lock = self._peer_locks.get(peer)
        if lock is None:
            lock = self._peer_locks[peer] = asyncio.Lock()
        return lock

    def _check_peer(self, peer: str) -> None:
        _name_bytes(peer, "peer")
        if peer == self.account:
            raise E2EError("cannot open an end-to-end session with oneself")

    def _load(self, peer: str) -> tuple[_Record, int | None]:
        cached = self._records.get(peer)
        if cached is not None and (cached.dirty
                                   or cached.version == self._store.session_version(peer)):
            return cached.record, cached.version
        stored = self._store.load_session(peer)
        record, version = ((_Record(), None) if stored is None
                           else (_Record.from_json(stored.state), stored.version))
        self._records[peer] = _CachedRecord(record, version)
        return record, version

    def _save(self, peer: str, record: _Record, version: int | None, *, persist: bool = True,
              identity: tuple[str, int | None] | None = None) -> None:
        cached = self._records.get(peer)
        if cached is None or cached.record is not record:
            cached = self._records[peer] = _CachedRecord(record, version)
        if not persist:
            cached.dirty = True
            return
        try:
            cached.version = self._store.save_session(peer, record.to_json(), version,
                                                      identity=identity)
        except BaseException:
            if not cached.dirty:  # memory may be ahead of the store: re-read next time
                self._records.pop(peer, None)
            raise
        cached.dirty = False

    def persist(self) -> None:
        """Save every record changed by ``decrypt(..., persist=False)``.

        Inside the caller's open transaction, if any (the caller commits).
        Raises :class:`SessionConflictError` if another writer changed one.
        """
        for peer, cached in self._records.items():
            if cached.dirty:
                cached.version = self._store.save_session(peer, cached.record.to_json(),
                                                          cached.version)
                cached.dirty = False

    def discard_unsaved(self) -> None:
        """Forget in-memory state not known to be committed (after a failed transaction)."""
        self._records.clear()

    def _refresh_identity(self) -> None:
        stored = self._store.load_identity()
        if stored is None:
            raise StateError("the store lost the identity")
        if stored.version != self._identity_version:
            self._identity._adopt(E2EIdentity.from_json(stored.state))
            self._identity_version = stored.version

    # -- queries

    def has_session(self, peer: str) -> bool:
        """Whether a session with ``peer`` exists (so :meth:`encrypt` needs no bundle)."""
        return bool(self._load(peer)[0].sessions)

    def peer_identity_key(self, peer: str) -> bytes | None:
        """The identity key of ``peer`` in the current session, if any."""
        sessions = self._load(peer)[0].sessions
        return sessions[0].peer_identity_key if sessions else None

    def reset_session(self, peer: str) -> None:
        """Forget every session with ``peer`` (the next :meth:`encrypt` starts a new one).

        The X3DH ephemeral keys seen from ``peer`` are kept, so replayed first
        messages of the dropped sessions stay refused.
        """
        for attempt in range(_SAVE_ATTEMPTS):
            record, version = self._load(peer)
            if version is None or not record.sessions:
                return
            record.sessions.clear()
            try:
                self._save(peer, record, version)
            except SessionConflictError:
                if attempt + 1 == _SAVE_ATTEMPTS:
                    raise
                continue
            return

    # -- prekey maintenance (persisted before returning)

    def top_up_one_time_prekeys(self, n: int) -> list[str]:
        """Generate ``n`` one-time prekeys, save them, and return the public halves to upload."""
        for attempt in range(_SAVE_ATTEMPTS):
            self._refresh_identity()
            keys = self._identity.new_one_time_prekeys(n)
            try:
                self._identity_version = self._store.save_identity(
                    self._identity.to_json(), self._identity_version)
            except SessionConflictError:
                if attempt + 1 == _SAVE_ATTEMPTS:
                    raise
                continue
            except BaseException:
                self._identity_version = -1  # reload from the store next time
                raise
            return keys
        raise AssertionError("unreachable")

    def rotate_signed_prekey_if_due(self, max_age: int = SIGNED_PREKEY_MAX_AGE,
                                    force: bool = False) -> bool:
        """Rotate the signed prekey when older than ``max_age`` seconds (or ``force``); saved.

        Returns whether it rotated; if so, publish
        ``identity.publish_bundle(include_one_time_prekeys=False)``.
        """
        for attempt in range(_SAVE_ATTEMPTS):
            self._refresh_identity()
            if not force and self._identity.signed_prekey_age() <= max_age:
                return False
            self._identity.rotate_signed_prekey()
            try:
                self._identity_version = self._store.save_identity(
                    self._identity.to_json(), self._identity_version)
            except SessionConflictError:
                if attempt + 1 == _SAVE_ATTEMPTS:
                    raise
                continue
            except BaseException:
                self._identity_version = -1
                raise
            return True
        raise AssertionError("unreachable")

    # -- encryption

    async def encrypt(self, peer: str, plaintext: bytes,
                      fetch_bundle: Callable[[str], Awaitable[Mapping[str, Any]]],
                      on_saved: Callable[[dict[str, Any]], None] | None = None,
                      ) -> dict[str, Any]:
        """Encrypt ``plaintext`` for ``peer``; returns the JSON-able envelope.

        Without a session, ``fetch_bundle(peer)`` supplies the peer's bundle
        (with at most one one-time prekey) and X3DH starts one. Raises
        :class:`BundleError` for a bad bundle, :class:`SessionConflictError`
        if the store keeps changing underneath. ``on_saved(envelope)`` runs in
        the same atomic block as the session's save (e.g. to queue the
        envelope in the same database), and an error it raises undoes both.
        """
        self._check_peer(peer)
        data = bytes(plaintext)
        async with self._lock(peer):
            bundle: x3dh.Bundle | None = None
            for attempt in range(_SAVE_ATTEMPTS):
                record, version = self._load(peer)
                if record.sessions:
                    session = record.sessions[0]
                    message = await session.ratchet.encrypt_message(
                        data, _message_ad(session.ad, self.account, peer))
                else:
                    if bundle is None:
                        bundle = _single_prekey(parse_bundle(await fetch_bundle(peer)))
                    session, message = await self._start_session(peer, bundle, data)
                    record.add(session)
                envelope = _envelope_to_json(session.pending, message)
                try:
                    with self._store.atomic():
                        self._save(peer, record, version)
                        if on_saved is not None:
                            on_saved(envelope)
                except SessionConflictError:
                    if attempt + 1 == _SAVE_ATTEMPTS:
                        raise
                    continue
                return envelope
        raise AssertionError("unreachable")

    async def _start_session(self, peer: str, bundle: x3dh.Bundle,
                             plaintext: bytes) -> tuple[_Session, EncryptedMessage]:
        try:
            shared_secret, ad, header = await self._identity._state.get_shared_secret_active(
                bundle, _names_appendix(self.account, peer), require_pre_key=False)
        except (x3dh.KeyAgreementException, ValueError, xeddsa.XEdDSAException) as exc:
            raise BundleError(f"key agreement with the bundle failed ({type(exc).__name__})"
                              ) from None
        # The responder's signed prekey is its first ratchet key (Signal's X3DH + DR).
        ratchet, message = await _ratchet_encrypt_initial(
            shared_secret, bundle.signed_pre_key, plaintext,
            _message_ad(ad, self.account, peer))
        session = _Session(ratchet=ratchet, ad=ad, origin_ephemeral=header.ephemeral_key,
                           peer_identity_key=bundle.identity_key, pending=header)
        return session, message

    # -- decryption

    async def decrypt(self, peer: str, envelope: Mapping[str, Any], *,
                      persist: bool = True) -> bytes:
        """Decrypt an envelope ``peer`` sent (``peer`` as the server authenticated it).

        Raises :class:`MalformedEnvelopeError`, :class:`KeyAgreementError`,
        :class:`DuplicateMessageError` (replay), :class:`NoSessionError` or
        :class:`DecryptionError` (tampered, or from an unknown session); the
        stored state is unchanged by a failure. With ``persist=False`` the
        change is saved by the next :meth:`persist` (a first message of a new
        session, which uses up a one-time prekey, is always saved at once).
        """
        self._check_peer(peer)
        parsed = _parse_envelope(envelope)
        async with self._lock(peer):
            for attempt in range(_SAVE_ATTEMPTS):
                record, version = self._load(peer)
                try:
                    if parsed.x3dh is not None:
                        plaintext = await self._decrypt_initial(peer, record, version, parsed,
                                                                persist)
                    else:
                        plaintext = await self._decrypt_existing(peer, record, parsed,
                                                                 record.sessions)
                        self._save(peer, record, version, persist=persist)
                except SessionConflictError:
                    if attempt + 1 == _SAVE_ATTEMPTS:
                        raise
                    continue
                return plaintext
        raise AssertionError("unreachable")

    async def _decrypt_existing(self, peer: str, record: _Record, parsed: _Envelope,
                                candidates: list[_Session]) -> bytes:
        if not candidates:
            raise NoSessionError("no end-to-end session with this peer")
        duplicate = False
        for session in candidates:
            try:
                plaintext = await session.ratchet.decrypt_message(
                    parsed.message, _message_ad(session.ad, peer, self.account))
            except DuplicateMessageException:
                duplicate = True
                continue
            except _DECRYPT_FAILURES:
                continue
            # A reply on a session we started: the peer has it, stop resending X3DH.
            session.pending = None
            record.promote(session)
            return plaintext
        if duplicate:
            raise DuplicateMessageError("message already decrypted (replay)")
        raise DecryptionError("message failed to authenticate")

    async def _decrypt_initial(self, peer: str, record: _Record, version: int | None,
                               parsed: _Envelope, persist: bool) -> bytes:
        header = parsed.x3dh
        assert header is not None
        for session in record.sessions:
            if session.origin_ephemeral == header.ephemeral_key:
                if session.peer_identity_key != header.identity_key:
                    raise DecryptionError("message failed to authenticate")
                # Another message of a first flight we already agreed on.
                plaintext = await self._decrypt_existing(peer, record, parsed, [session])
                self._save(peer, record, version, persist=persist)
                return plaintext
        if header.ephemeral_key in record.known_ephemerals:
            raise DuplicateMessageError("first message of a discarded session (replay)")

        async with self._identity_lock:
            self._refresh_identity()
            try:
                shared_secret, ad, signed_prekey = \
                    await self._identity._state.get_shared_secret_passive(
                        header, _names_appendix(peer, self.account), require_pre_key=False)
            except (x3dh.KeyAgreementException, ValueError, xeddsa.XEdDSAException) as exc:
                raise KeyAgreementError(
                    f"X3DH failed ({type(exc).__name__}): one-time prekey already used or "
                    "signed prekey expired") from None
            try:
                ratchet, plaintext = await _ratchet_decrypt_initial(
                    shared_secret, signed_prekey.priv, parsed.message,
                    _message_ad(ad, peer, self.account))
            except DuplicateMessageException:  # pragma: no cover - impossible on a new ratchet
                raise DuplicateMessageError("message already decrypted (replay)") from None
            except _DECRYPT_FAILURES:
                raise DecryptionError("message failed to authenticate") from None
            record.add(_Session(ratchet=ratchet, ad=ad, origin_ephemeral=header.ephemeral_key,
                                peer_identity_key=header.identity_key, pending=None))
            # The one-time prekey is used up: delete it in the same transaction.
            if header.pre_key is not None:
                self._identity._consume_one_time_prekey(header.pre_key)
            try:
                self._save(peer, record, version,
                           identity=(self._identity.to_json(), self._identity_version))
            except BaseException:
                self._identity_version = -1  # in-memory identity may be ahead: reload
                raise
            self._identity_version += 1
            return plaintext


def _single_prekey(bundle: x3dh.Bundle) -> x3dh.Bundle:
    if len(bundle.pre_keys) > 1:
        raise BundleError("a fetched bundle must carry at most one one-time prekey")
    return bundle
