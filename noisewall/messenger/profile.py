"""A client's profile folder: keys, settings, history and outbox in one SQLite file.

Message bodies in the history are sealed (:mod:`~noisewall.messenger.history_cipher`)
with a key derived from the profile's Noise static private key; a profile
written before that is migrated when opened, and its file rebuilt so that no
plaintext lingers in free pages or the WAL.

The folder is kept mode 0700 and the database (with its WAL and shared-memory
files) mode 0600 whatever the umask, or the mode of a folder the user made
beforehand: it holds the Noise static private key and the end-to-end session
state.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from noisewall.errors import InputError
from noisewall.messenger.history_cipher import HistoryCipher
from noisewall.noise import KeyPair, dh_function

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    peer TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind TEXT NOT NULL,
    body BLOB NOT NULL,  -- sealed JSON (a TEXT body is an unsealed one from before)
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (peer, direction, msg_id)
);
CREATE INDEX IF NOT EXISTS history_by_id ON history (msg_id);
CREATE TABLE IF NOT EXISTS outbox (
    msg_id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0  -- failed delivery attempts
);
"""


class ProfileError(InputError):
    """The profile folder is missing, not registered, or unreadable."""


@dataclass(frozen=True)
class HistoryEntry:
    """One message in the local history."""

    peer: str
    msg_id: str
    direction: str
    kind: str
    body: dict[str, Any]
    ts: float
    status: str

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {"peer": self.peer, "id": self.msg_id, "direction": self.direction,
                "kind": self.kind, "body": self.body, "ts": self.ts, "status": self.status}


@dataclass(frozen=True)
class OutboxItem:
    """An encrypted message waiting for the server's ack."""

    msg_id: str
    recipient: str
    envelope: dict[str, Any]
    attempts: int


class Profile:
    """The profile database; one per client identity."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        path = folder / "profile.sqlite3"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            _owner_only(folder, 0o700)
            # SQLite gives its -wal and -shm files the database's mode: tighten it first.
            for owned in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                if owned.exists():
                    _owner_only(owned, 0o600)
        except OSError as exc:
            raise ProfileError(f"{folder}: cannot make the profile private: {exc}") from None
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash; a power cut may lose the last moments.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ProfileError(f"{path}: cannot open the profile database: {exc}") from None
        self.media_dir = folder / "media"
        self._cipher: HistoryCipher | None = None
        self._seal_old_history()

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the writes inside one atomic commit (the block must not ``await``).

        Each statement outside a transaction commits on its own; grouping a
        message's writes costs one commit instead of several.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- settings ------------------------------------------------------

    def get(self, key: str) -> str | None:
        """A setting, or None."""
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def require(self, key: str) -> str:
        """A setting that must exist (the profile must be registered)."""
        value = self.get(key)
        if value is None:
            raise ProfileError(f"{self.folder}: not registered yet (run `noisewall client "
                               f"--profile {self.folder} register NAME --server HOST:PORT`)")
        return value

    def set(self, key: str, value: str) -> None:
        """Store a setting."""
        self.db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def noise_static(self) -> KeyPair:
        """The profile's Noise static key pair (its identity to the server), made on first use."""
        dh = dh_function("25519")
        stored = self.get("noise_private")
        if stored is None:
            pair = dh.generate_keypair()
            self.set("noise_private", pair.private_bytes().hex())
            return pair
        return dh.keypair_from_private(bytes.fromhex(stored))

    # --- history -------------------------------------------------------

    @property
    def _history_cipher(self) -> HistoryCipher:
        if self._cipher is None:
            self._cipher = HistoryCipher(self.noise_static().private_bytes())
        return self._cipher

    def _seal_old_history(self) -> None:
        """Seal the bodies a profile of an earlier version kept in plaintext.

        Then rebuild the database file (VACUUM) and empty the WAL: the old
        bodies would otherwise survive in free pages and old WAL frames.
        """
        rows = self.db.execute("SELECT rowid, peer, direction, msg_id, body FROM history "
                               "WHERE typeof(body) = 'text'").fetchall()
        if not rows:
            return
        cipher = self._history_cipher
        with self.transaction():
            self.db.executemany("UPDATE history SET body = ? WHERE rowid = ?", [
                (cipher.seal((peer, direction, msg_id), body.encode("utf-8")), rowid)
                for rowid, peer, direction, msg_id, body in rows])
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def entry(self, row: Sequence[Any]) -> HistoryEntry:
        """A history row ``(peer, msg_id, direction, kind, body, ts, status)``, opened."""
        peer, msg_id, direction, kind, sealed, ts, status = row
        body = self._history_cipher.open((peer, direction, msg_id), sealed)
        return HistoryEntry(peer, msg_id, direction, kind, json.loads(body), ts, status)

    def record(self, peer: str, msg_id: str, direction: str, kind: str,
               body: dict[str, Any], *, status: str, ts: float | None = None) -> bool:
        """Add a message to the history; False if it was already there (a duplicate)."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO history VALUES (?, ?, ?, ?, ?, ?, ?)",
            (peer, msg_id, direction, kind,
             self._history_cipher.seal((peer, direction, msg_id), json.dumps(body).encode()),
             ts or time.time(), status))
        return cursor.rowcount == 1

    def set_status(self, peer: str, msg_id: str, direction: str, status: str) -> None:
        """Update a message's status (sent, delivered, read, played...)."""
        self.db.execute("UPDATE history SET status = ? WHERE peer = ? AND msg_id = ? "
                        "AND direction = ?", (status, peer, msg_id, direction))

    def find(self, msg_id: str) -> HistoryEntry | None:
        """A received message by id."""
        row = self.db.execute("SELECT * FROM history WHERE msg_id = ? AND direction = 'in'",
                              (msg_id,)).fetchone()
        return None if row is None else self.entry(row)

    def history(self, peer: str | None = None) -> list[HistoryEntry]:
        """Messages, oldest first, optionally with one peer only."""
        if peer is None:
            rows = self.db.execute("SELECT * FROM history ORDER BY ts").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM history WHERE peer = ? ORDER BY ts",
                                   (peer,)).fetchall()
        return [self.entry(row) for row in rows]

    def contacts(self) -> list[str]:
        """Everyone this profile has exchanged messages with."""
        return [row[0] for row in self.db.execute("SELECT DISTINCT peer FROM history ORDER BY 1")]

    # --- outbox --------------------------------------------------------

    def queue(self, msg_id: str, recipient: str, envelope: dict[str, Any]) -> None:
        """Keep an encrypted message until the server acknowledges it."""
        self.db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, 0)",
                        (msg_id, recipient, json.dumps(envelope), time.time()))

    def outbox(self, skip: Container[str] = ()) -> list[OutboxItem]:
        """Messages not yet acknowledged, oldest first, except the ids in ``skip``."""
        rows = self.db.execute(
            "SELECT msg_id, recipient, envelope, attempts FROM outbox ORDER BY created").fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3]) for r in rows if r[0] not in skip]

    def attempted(self, msg_ids: Sequence[str]) -> None:
        """Count a failed delivery attempt of each of ``msg_ids``."""
        self.db.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE msg_id = ?",
                            [(msg_id,) for msg_id in msg_ids])

    def acked(self, acks: Sequence[tuple[str, str, str]]) -> None:
        """The server has these (recipient, msg_id, status) messages: out of the outbox.

        The status ("sent", or "failed" for an unknown recipient) replaces
        only "queued": a receipt that overtook the ack is not undone.
        """
        self.db.executemany("UPDATE history SET status = ? WHERE peer = ? AND msg_id = ? "
                            "AND direction = 'out' AND status = 'queued'",
                            [(status, peer, msg_id) for peer, msg_id, status in acks])
        self.db.executemany("DELETE FROM outbox WHERE msg_id = ?",
                            [(msg_id,) for _, msg_id, _ in acks])


def _owner_only(path: Path, mode: int) -> None:
    """Take group and other permissions away from ``path`` (mkdir's mode yields to the umask,
    and a folder the user made beforehand has its own)."""
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(mode)

