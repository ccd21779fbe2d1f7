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

