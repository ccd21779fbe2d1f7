"""Double Ratchet sessions with peers: one current and a few archived per peer, persisted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import x3dh
import xeddsa
from doubleratchet import DuplicateMessageException, EncryptedMessage

from noisewall.messenger.e2e.encoding import (
    Envelope,
    b64,
    envelope_to_json,
    json_dump,
    json_load,
    name_bytes,
    parse_bundle,
    parse_envelope,
    unb64,
    x3dh_header_from_json,
    x3dh_header_to_json,
)
from noisewall.messenger.e2e.errors import (
    BundleError,
    DecryptionError,
    DuplicateMessageError,
    E2EError,
    KeyAgreementError,
    NoSessionError,
    SessionConflictError,
    StateError,
)
from noisewall.messenger.e2e.identity import E2EIdentity
from noisewall.messenger.e2e.primitives import (
    DECRYPT_FAILURES,
    KEY_SIZE,
    Ratchet,
    message_ad,
    names_appendix,
    ratchet_decrypt_initial,
    ratchet_encrypt_initial,
    ratchet_from_json,
)
from noisewall.messenger.e2e.store import SessionStore
from noisewall.messenger.e2e.trust import KeyBook

MAX_ARCHIVED_SESSIONS = 4
"""Earlier sessions kept per peer besides the current one."""
SIGNED_PREKEY_MAX_AGE = 7 * 24 * 3600
"""Default rotation period of the signed prekey, in seconds."""

_MAX_KNOWN_EPHEMERALS = 64
_SAVE_ATTEMPTS = 3


@dataclass
class _Session:
    ratchet: Ratchet
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
            self._fixed_json = json_dump({
                "ad": b64(self.ad),
                "ephemeral": b64(self.origin_ephemeral),
                "peer_identity_key": b64(self.peer_identity_key),
            })[:-1]
        pending = "null" if self.pending is None else json_dump(
            x3dh_header_to_json(self.pending))
        return (f'{self._fixed_json},"pending":{pending},'
                f'"ratchet":{self.ratchet.model.model_dump_json()}}}')

    @classmethod
    def from_json(cls, data: Any) -> _Session:
        if not isinstance(data, dict):
            raise StateError("stored session is malformed")
        pending = data.get("pending")
        return cls(
            ratchet=ratchet_from_json(data["ratchet"]),
            ad=unb64(data["ad"], "ad", None, StateError),
            origin_ephemeral=unb64(data["ephemeral"], "ephemeral", KEY_SIZE, StateError),
            peer_identity_key=unb64(data["peer_identity_key"], "peer_identity_key",
                                     KEY_SIZE, StateError),
            pending=None if pending is None else x3dh_header_from_json(pending, StateError),
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
        head = json_dump({"known_ephemerals": [b64(e) for e in self.known_ephemerals],
                           "v": 1})
        sessions = ",".join(session.to_json() for session in self.sessions)
        return f'{head[:-1]},"sessions":[{sessions}]}}'

    @classmethod
    def from_json(cls, text: str) -> _Record:
        data = json_load(text, "session")
        if data.get("v") != 1:
            raise StateError("unsupported session state version")
        try:
            return cls(
                sessions=[_Session.from_json(s) for s in data["sessions"]],
                known_ephemerals=[unb64(e, "ephemeral", KEY_SIZE, StateError)
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

    With a :class:`KeyBook`, :meth:`encrypt` refuses a peer whose identity key
    is not the trusted one (:class:`IdentityChangedError`) before encrypting
    anything, and :meth:`decrypt` notes the key of every message it opens.
    """

    def __init__(self, identity: E2EIdentity, store: SessionStore,
                 trust: KeyBook | None = None) -> None:
        self._identity = identity
        self._store = store
        self._trust = trust
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
        name_bytes(peer, "peer")
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
                    self._check_trust(peer, session.peer_identity_key)
                    message = await session.ratchet.encrypt_message(
                        data, message_ad(session.ad, self.account, peer))
                else:
                    if bundle is None:
                        bundle = _single_prekey(parse_bundle(await fetch_bundle(peer)))
                    self._check_trust(peer, bundle.identity_key)
                    session, message = await self._start_session(peer, bundle, data)
                    record.add(session)
                envelope = envelope_to_json(session.pending, message)
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

    def _check_trust(self, peer: str, identity_key: bytes) -> None:
        if self._trust is not None:
            self._trust.check(peer, identity_key)

    async def _start_session(self, peer: str, bundle: x3dh.Bundle,
                             plaintext: bytes) -> tuple[_Session, EncryptedMessage]:
        try:
            shared_secret, ad, header = await self._identity._state.get_shared_secret_active(
                bundle, names_appendix(self.account, peer), require_pre_key=False)
        except (x3dh.KeyAgreementException, ValueError, xeddsa.XEdDSAException) as exc:
            raise BundleError(f"key agreement with the bundle failed ({type(exc).__name__})"
                              ) from None
        # The responder's signed prekey is its first ratchet key (Signal's X3DH + DR).
        ratchet, message = await ratchet_encrypt_initial(
            shared_secret, bundle.signed_pre_key, plaintext,
            message_ad(ad, self.account, peer))
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
        parsed = parse_envelope(envelope)
        async with self._lock(peer):
            for attempt in range(_SAVE_ATTEMPTS):
                record, version = self._load(peer)
                current = record.sessions[0] if record.sessions else None
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
                if self._trust is not None and record.sessions[0] is not current:
                    # A new or promoted session (the one that opened it) will carry the
                    # replies: its key is the one to note. The usual message changes nothing.
                    self._trust.observe(peer, record.sessions[0].peer_identity_key)
                return plaintext
        raise AssertionError("unreachable")

    async def _decrypt_existing(self, peer: str, record: _Record, parsed: Envelope,
                                candidates: list[_Session]) -> bytes:
        if not candidates:
            raise NoSessionError("no end-to-end session with this peer")
        duplicate = False
        for session in candidates:
            try:
                plaintext = await session.ratchet.decrypt_message(
                    parsed.message, message_ad(session.ad, peer, self.account))
            except DuplicateMessageException:
                duplicate = True
                continue
            except DECRYPT_FAILURES:
                continue
            # A reply on a session we started: the peer has it, stop resending X3DH.
            session.pending = None
            record.promote(session)
            return plaintext
        if duplicate:
            raise DuplicateMessageError("message already decrypted (replay)")
        raise DecryptionError("message failed to authenticate")

    async def _decrypt_initial(self, peer: str, record: _Record, version: int | None,
                               parsed: Envelope, persist: bool) -> bytes:
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
                        header, names_appendix(peer, self.account), require_pre_key=False)
            except (x3dh.KeyAgreementException, ValueError, xeddsa.XEdDSAException) as exc:
                raise KeyAgreementError(
                    f"X3DH failed ({type(exc).__name__}): one-time prekey already used or "
                    "signed prekey expired") from None
            try:
                ratchet, plaintext = await ratchet_decrypt_initial(
                    shared_secret, signed_prekey.priv, parsed.message,
                    message_ad(ad, peer, self.account))
            except DuplicateMessageException:  # pragma: no cover - impossible on a new ratchet
                raise DuplicateMessageError("message already decrypted (replay)") from None
            except DECRYPT_FAILURES:
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
