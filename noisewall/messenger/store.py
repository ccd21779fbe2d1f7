"""The chat server's durable state in SQLite (WAL): accounts, prekeys, the message queue.

All access runs on one worker thread that owns the connection. Writes are
group-committed: every write waiting when the worker becomes free goes into
one transaction, and each caller's future resolves only after that
transaction has committed (``synchronous=FULL``), so the server never
acknowledges a message before it is on disk.

The worker outlives a failing database: when another process holds the write
lock past ``busy_timeout`` (or a write fails), the requests of that group get
:class:`StoreUnavailableError` and the next group is tried afresh. Per-account
quotas (:class:`~noisewall.messenger.limits.StoreLimits`) raise
:class:`QuotaExceededError` with the request's changes rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from noisewall.messenger.limits import StoreLimits
from noisewall.messenger.messages import Message
from noisewall.private_files import private_file

T = TypeVar("T")
DEFAULT_TTL = 30 * 24 * 3600.0
MAX_BATCH = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    static_key BLOB NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS key_bundles (
    name TEXT PRIMARY KEY REFERENCES accounts(name),
    bundle TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS one_time_prekeys (
    name TEXT NOT NULL REFERENCES accounts(name),
    prekey TEXT NOT NULL,
    PRIMARY KEY (name, prekey)
);
CREATE TABLE IF NOT EXISTS queue (
    queue_id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS queue_recipient ON queue (recipient, queue_id);
CREATE TABLE IF NOT EXISTS accepted (
    sender TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (sender, msg_id)
);
"""


_COUNT_QUEUED = {
    "recipient": "SELECT COUNT(*) FROM queue WHERE recipient = ?",
    "sender": "SELECT COUNT(*) FROM queue WHERE sender = ?",
}

_Job = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]
_Result = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(results: list[_Result]) -> None:
    """Resolve the callers' futures (on their event loop, after the group's COMMIT)."""
    for future, value, failure in results:
        if future.cancelled():
            continue
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(value)


def _make_private(path: Path) -> None:
    """The database file 0600 before SQLite opens it (SQLite gives new WAL and SHM files
    the database's mode), and a WAL or SHM file an older server left readable tightened."""
    private_file(path)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            private_file(companion)


class NameTakenError(Exception):
    """The requested account name belongs to another key."""


class UnknownRecipientError(Exception):
    """A message names a recipient without an account."""


class StoreUnavailableError(Exception):
    """The database could not run the request (locked by another process, failing disk)."""


class QuotaExceededError(Exception):
    """The request would take the account past one of its quotas; nothing was changed."""


@dataclass(frozen=True)
class Queued:
    """A stored message waiting for its recipient."""

    queue_id: int
    recipient: str
    sender: str
    msg_id: str
    envelope: dict[str, Any]
    created: float

    def push(self) -> Message:
        """The ``message`` push sent to the recipient."""
        return Message(self.queue_id, self.sender, self.msg_id, self.envelope, self.created)


class ChatStore:
    """Durable server state; every method is a coroutine served by the worker thread."""

    def __init__(self, path: Path, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.time,
                 limits: StoreLimits | None = None) -> None:
        self.path = path
        self.ttl = ttl
        self.limits = limits if limits is not None else StoreLimits()
        self._clock = clock
        # Undelivered messages per recipient / sender, counted once from the DB and then
        # kept by the worker thread alone; forgotten whenever a transaction fails.
        self._inbox: dict[str, int] = {}
        self._outbox: dict[str, int] = {}
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="chat-store", daemon=True)
        self._thread.start()
        self._ready.result()

    # --- worker thread -------------------------------------------------

    def _run(self) -> None:
        try:
            _make_private(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=self.limits.busy_timeout)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        while True:
            job = self._jobs.get()
            if job is None:
                db.close()
                return
            batch: list[_Job] = [job]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                batch.append(more)
            self._run_batch(db, batch)

    def _run_batch(self, db: sqlite3.Connection, batch: list[_Job]) -> None:
        # A caller cancelled before its job ran no longer waits: skip the job (a
        # cancellation racing with this check only means the job runs unawaited).
        batch = [job for job in batch if not job[1].cancelled()]
        if not batch:
            return
        try:
            results = self._transaction(db, batch)
        except Exception as exc:  # the worker must outlive any failure of the database
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
            self._inbox.clear()
            self._outbox.clear()
            failure = StoreUnavailableError(f"the chat database is unavailable ({exc})")
            results = [(future, None, failure) for _, future in batch]
        # Only now, after COMMIT, does any caller learn its result: the whole
        # group in one hop per event loop (one wake-up, not one per job).
        by_loop: dict[asyncio.AbstractEventLoop, list[_Result]] = {}
        for result in results:
            by_loop.setdefault(result[0].get_loop(), []).append(result)
        for loop, group in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, group)

    @staticmethod
    def _transaction(db: sqlite3.Connection, batch: list[_Job]) -> list[_Result]:
        results: list[_Result] = []
        db.execute("BEGIN IMMEDIATE")
        for function, future in batch:
            db.execute("SAVEPOINT job")
            try:
                results.append((future, function(db), None))
                db.execute("RELEASE job")
            except Exception as exc:  # one bad job must not sink the batch
                db.execute("ROLLBACK TO job")
                db.execute("RELEASE job")
                if isinstance(exc, sqlite3.Error):
                    exc = StoreUnavailableError(f"the chat database failed ({exc})")
                results.append((future, None, exc))
        db.execute("COMMIT")
        return results

    def _queued(self, db: sqlite3.Connection, by: Literal["recipient", "sender"],
                name: str) -> int:
        """Undelivered messages for (``by="recipient"``) or from (``"sender"``) ``name``."""
        counts = self._inbox if by == "recipient" else self._outbox
        if name not in counts:
            counts[name] = int(db.execute(_COUNT_QUEUED[by], (name,)).fetchone()[0])
        return counts[name]

    async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((function, future))
        return await future

    def close(self) -> None:
        """Finish queued work and close the database."""
        self._jobs.put(None)
        self._thread.join(timeout=10)

    # --- accounts and keys ---------------------------------------------

    async def register(self, name: str, static_key: bytes) -> None:
        """Bind ``name`` to ``static_key``; idempotent for the same pair."""

        def run(db: sqlite3.Connection) -> None:
            row = db.execute("SELECT static_key FROM accounts WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if bytes(row[0]) != static_key:
                    raise NameTakenError(name)
                return
            try:
                db.execute("INSERT INTO accounts VALUES (?, ?, ?)",
                           (name, static_key, self._clock()))
            except sqlite3.IntegrityError:
                raise NameTakenError("this key already has an account") from None

        await self._call(run)

    async def account_for_key(self, static_key: bytes) -> str | None:
        """The account bound to a Noise static key."""

        def run(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT name FROM accounts WHERE static_key = ?",
                             (static_key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._call(run)

    async def publish_keys(self, name: str, bundle: dict[str, Any],
                           one_time_prekeys: list[str]) -> int:
        """Store the long-term part of a bundle and add one-time prekeys; returns the stock."""

        limits = self.limits
        text = json.dumps(bundle)
        if len(text) > limits.max_bundle_bytes:
            raise QuotaExceededError(f"a key bundle is at most {limits.max_bundle_bytes} bytes "
                                     f"of JSON (this one {len(text)})")
        if any(len(prekey) > limits.max_prekey_chars for prekey in one_time_prekeys):
            raise QuotaExceededError(f"a one-time prekey is at most {limits.max_prekey_chars} "
                                     "characters")

        def run(db: sqlite3.Connection) -> int:
            db.execute("INSERT OR REPLACE INTO key_bundles VALUES (?, ?)", (name, text))
            db.executemany("INSERT OR IGNORE INTO one_time_prekeys VALUES (?, ?)",
                           [(name, prekey) for prekey in one_time_prekeys])
            row = db.execute("SELECT COUNT(*) FROM one_time_prekeys WHERE name = ?",
                             (name,)).fetchone()
            if row[0] > limits.max_prekeys:
                raise QuotaExceededError(
                    f"the directory holds at most {limits.max_prekeys} one-time prekeys per "
                    f"account (this would make {row[0]})")
            return int(row[0])

        return await self._call(run)

    async def prekey_stock(self, name: str) -> int:
        """How many one-time prekeys the directory still holds for ``name``."""

        def run(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT COUNT(*) FROM one_time_prekeys WHERE name = ?",
                             (name,)).fetchone()
            return int(row[0])

        return await self._call(run)

    async def take_bundle(self, name: str) -> dict[str, Any] | None:
        """A peer's bundle with one one-time prekey, which is removed (used once)."""

        def run(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT bundle FROM key_bundles WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            bundle: dict[str, Any] = json.loads(row[0])
            prekey = db.execute("SELECT prekey FROM one_time_prekeys WHERE name = ? LIMIT 1",
                                (name,)).fetchone()
            bundle["one_time_prekeys"] = [] if prekey is None else [prekey[0]]
            if prekey is not None:
                db.execute("DELETE FROM one_time_prekeys WHERE name = ? AND prekey = ?",
                           (name, prekey[0]))
            return bundle

        return await self._call(run)

    # --- messages ------------------------------------------------------

    async def enqueue(self, sender: str, recipient: str, msg_id: str,
                      envelope: dict[str, Any]) -> Queued | None:
        """Store a message durably; None if this (sender, msg_id) was accepted before.

        Raises :class:`UnknownRecipientError` if ``recipient`` has no account.
        """
        now = self._clock()
        text = json.dumps(envelope, separators=(",", ":"))

        def run(db: sqlite3.Connection) -> Queued | None:
            known = db.execute("SELECT 1 FROM accounts WHERE name = ?", (recipient,)).fetchone()
            if known is None:
                raise UnknownRecipientError(recipient)
            try:
                db.execute("INSERT INTO accepted VALUES (?, ?, ?)", (sender, msg_id, now))
            except sqlite3.IntegrityError:
                return None
            self._check_queue_quotas(db, sender, recipient)
            cursor = db.execute(
                "INSERT INTO queue (recipient, sender, msg_id, envelope, created) "
                "VALUES (?, ?, ?, ?, ?)", (recipient, sender, msg_id, text, now))
            self._inbox[recipient] += 1
            self._outbox[sender] += 1
            return Queued(int(cursor.lastrowid or 0), recipient, sender, msg_id, envelope, now)

        return await self._call(run)

    def _check_queue_quotas(self, db: sqlite3.Connection, sender: str, recipient: str) -> None:
        if (queued := self._queued(db, "recipient", recipient)) >= self.limits.max_inbox:
            raise QuotaExceededError(f"{recipient!r} has {queued} undelivered messages, the most "
                                     "the server keeps for one account")
        if (queued := self._queued(db, "sender", sender)) >= self.limits.max_outbox:
            raise QuotaExceededError(f"you have {queued} undelivered messages queued, the most "
                                     "the server keeps from one sender")

    async def pending(self, recipient: str, after: int = 0, limit: int = 1000) -> list[Queued]:
        """Messages waiting for ``recipient``, oldest first."""

        def run(db: sqlite3.Connection) -> list[Queued]:
            rows = db.execute(
                "SELECT queue_id, recipient, sender, msg_id, envelope, created FROM queue "
                "WHERE recipient = ? AND queue_id > ? ORDER BY queue_id LIMIT ?",
                (recipient, after, limit)).fetchall()
            return [Queued(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

        return await self._call(run)

    async def delivered(self, recipient: str, queue_ids: list[int]) -> int:
        """Delete messages the recipient acknowledged; returns how many went."""

        ids = json.dumps(queue_ids)

        def run(db: sqlite3.Connection) -> int:
            senders = db.execute(
                "DELETE FROM queue WHERE recipient = ? AND queue_id IN "
                "(SELECT value FROM json_each(?)) RETURNING sender", (recipient, ids)).fetchall()
            if recipient in self._inbox:
                self._inbox[recipient] -= len(senders)
            for (sender,) in senders:
                if sender in self._outbox:
                    self._outbox[sender] -= 1
            return len(senders)

        return await self._call(run)

    async def expire(self) -> int:
        """Drop undelivered messages and duplicate-detection records older than the TTL."""
        cutoff = self._clock() - self.ttl

        def run(db: sqlite3.Connection) -> int:
            gone = db.execute("DELETE FROM queue WHERE created < ?", (cutoff,)).rowcount
            db.execute("DELETE FROM accepted WHERE created < ?", (cutoff,))
            self._inbox.clear()
            self._outbox.clear()
            return int(gone)

        return await self._call(run)
