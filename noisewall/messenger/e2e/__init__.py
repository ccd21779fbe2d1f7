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

Identity keys are trusted on first use. Given a :class:`KeyBook`,
:class:`E2ESessions` refuses to encrypt to a peer whose identity key is not
the trusted one (:class:`IdentityChangedError`, before anything is
encrypted) until the user accepts the new key; messages from the new key are
still decrypted, and the change is noted. :mod:`.safety` computes Signal's
safety numbers for the user to compare and mark a key verified.

Nothing in this module logs; no error message contains key material or
plaintext.
"""

from noisewall.messenger.e2e.encoding import ENVELOPE_VERSION, fingerprint, parse_bundle
from noisewall.messenger.e2e.errors import (
    BundleError,
    DecryptionError,
    DuplicateMessageError,
    E2EError,
    IdentityChangedError,
    KeyAgreementError,
    MalformedEnvelopeError,
    NoSessionError,
    SessionConflictError,
    StateError,
    TrustError,
)
from noisewall.messenger.e2e.identity import E2EIdentity
from noisewall.messenger.e2e.sessions import MAX_ARCHIVED_SESSIONS, E2ESessions
from noisewall.messenger.e2e.store import SessionStore, SqliteSessionStore, StoredState
from noisewall.messenger.e2e.trust import KeyBook, TrustedKey

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_ARCHIVED_SESSIONS",
    "BundleError",
    "DecryptionError",
    "DuplicateMessageError",
    "E2EError",
    "E2EIdentity",
    "E2ESessions",
    "IdentityChangedError",
    "KeyAgreementError",
    "KeyBook",
    "MalformedEnvelopeError",
    "NoSessionError",
    "SessionConflictError",
    "SessionStore",
    "SqliteSessionStore",
    "StateError",
    "StoredState",
    "TrustError",
    "TrustedKey",
    "fingerprint",
    "parse_bundle",
]
