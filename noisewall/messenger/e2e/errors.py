"""The errors of end-to-end encryption: every one is an :class:`E2EError`."""

from __future__ import annotations


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



class IdentityChangedError(E2EError):
    """A peer's identity key differs from the one trusted for it: nothing was encrypted.

    Raised before any message is encrypted to the new key; sending stays held
    until the user accepts the new key (:meth:`KeyBook.accept`), ideally after
    comparing safety numbers with the peer.
    """

    def __init__(self, peer: str) -> None:
        super().__init__(f"the identity key of {peer!r} changed: nothing was encrypted to the "
                         "new key; compare safety numbers, then accept the new key to send")
        self.peer = peer


class TrustError(E2EError):
    """A trust decision cannot be made (no key known, no change to accept, numbers differ)."""
