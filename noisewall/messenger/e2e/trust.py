"""Which identity key is trusted for each peer: first use, changes held back, verification.

The first identity key seen for a peer (in its bundle, or in its first
message) is trusted, unverified. A different key later is never trusted by
itself: :meth:`KeyBook.check` refuses it before anything is encrypted to it,
and it waits as the peer's ``changed_key`` until the user accepts it (which
makes it trusted and unverified). Verified means the user compared safety
numbers out of band; it applies to one key and ends with a change.

Kept in the profile's SQLite (table ``e2e_trust``), beside the sessions.
"""

from __future__ import annotations

import hmac
import sqlite3
import time
from dataclasses import dataclass

from noisewall.messenger.e2e.errors import IdentityChangedError, TrustError


@dataclass(frozen=True)
class TrustedKey:
    """What is trusted for one peer."""

    peer: str
    identity_key: bytes
    verified: bool
    changed_key: bytes | None  # a different key seen since, not accepted


class KeyBook:
    """The trusted identity key of each peer, in the profile's SQLite connection.

    Each write commits at once unless the caller holds a transaction open.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS e2e_trust ("
            " peer TEXT PRIMARY KEY,"
            " identity_key BLOB NOT NULL,"
            " verified INTEGER NOT NULL DEFAULT 0,"
            " changed_key BLOB,"
            " updated_at REAL NOT NULL)")

    def get(self, peer: str) -> TrustedKey | None:
        """The trust record of ``peer``, or None if no key was ever seen."""
        row = self._db.execute("SELECT identity_key, verified, changed_key FROM e2e_trust "
                               "WHERE peer = ?", (peer,)).fetchone()
        if row is None:
            return None
        return TrustedKey(peer, bytes(row[0]), bool(row[1]),
                          None if row[2] is None else bytes(row[2]))

    def check(self, peer: str, identity_key: bytes) -> None:
        """Allow encrypting to ``identity_key`` for ``peer``, or :class:`IdentityChangedError`.

        A peer's first key is trusted here (trust on first use).
        """
        if self.observe(peer, identity_key):
            raise IdentityChangedError(peer)

    def observe(self, peer: str, identity_key: bytes) -> bool:
        """Note a key seen for ``peer``; True if it is not the trusted one (held as changed)."""
        # Every message sent or received asks: the usual answer takes one indexed read.
        row = self._db.execute("SELECT identity_key FROM e2e_trust WHERE peer = ?",
                               (peer,)).fetchone()
        if row is not None and hmac.compare_digest(row[0], identity_key):
            return False
        trusted = self.get(peer)
        if trusted is None:
            self._db.execute("INSERT INTO e2e_trust (peer, identity_key, updated_at) "
                             "VALUES (?, ?, ?)", (peer, identity_key, time.time()))
            return False
        if hmac.compare_digest(trusted.identity_key, identity_key):
            return False
        if trusted.changed_key != identity_key:
            self._db.execute("UPDATE e2e_trust SET changed_key = ?, updated_at = ? "
                             "WHERE peer = ?", (identity_key, time.time(), peer))
        return True

    def accept(self, peer: str) -> TrustedKey:
        """Trust the changed key of ``peer`` (unverified); :class:`TrustError` if none waits."""
        trusted = self.get(peer)
        if trusted is None or trusted.changed_key is None:
            raise TrustError(f"no changed identity key of {peer!r} waits to be accepted")
        self._db.execute("UPDATE e2e_trust SET identity_key = changed_key, changed_key = NULL, "
                         "verified = 0, updated_at = ? WHERE peer = ?", (time.time(), peer))
        return TrustedKey(peer, trusted.changed_key, False, None)

    def set_verified(self, peer: str, identity_key: bytes, verified: bool = True) -> TrustedKey:
        """Mark the trusted key of ``peer`` verified (or not).

        ``identity_key`` is the key the user compared: if it is no longer the
        trusted one, or a change waits, :class:`TrustError` (nothing marked).
        """
        trusted = self.get(peer)
        if trusted is None or not hmac.compare_digest(trusted.identity_key, identity_key):
            raise TrustError(f"the identity key of {peer!r} is not the one compared")
        if trusted.changed_key is not None:
            raise TrustError(f"the identity key of {peer!r} changed: accept the new key "
                             "before verifying")
        self._db.execute("UPDATE e2e_trust SET verified = ?, updated_at = ? WHERE peer = ?",
                         (int(verified), time.time(), peer))
        return TrustedKey(peer, identity_key, verified, None)
