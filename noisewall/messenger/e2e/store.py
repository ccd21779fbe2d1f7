"""Where sessions persist: the :class:`SessionStore` protocol and its SQLite implementation."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from noisewall.messenger.e2e.errors import SessionConflictError


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

