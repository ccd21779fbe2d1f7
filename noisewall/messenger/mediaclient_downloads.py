"""Where each received media message's download stands, in the profile's SQLite.

A received photo, video or voice note is committed to the history first and
its encrypted blob is fetched over HTTPS afterwards; once committed, the
server will never deliver the message again (a redelivery is a replay). So
every media message gets a row in table ``media_downloads``, written in the
same transaction as its history entry, and the download moves it on:

* ``downloaded``: the verified, decrypted file is at ``path``.
* ``pending``: not fetched yet: either never tried (the process stopped after
  the commit) or the last attempt failed for a reason that may pass (the media
  server unreachable, a reset or timeout, HTTP 5xx; reason ``unavailable``).
  It is tried again from ``next_attempt`` on, after a backoff that doubles
  with each failure (:class:`RetryPolicy`).
* ``failed``: ``attempts`` such failures in a row (reason ``unavailable``; an
  explicit retry may still try it), or at once when trying again cannot help:
  the blob fails its integrity check, i.e. it was tampered with (reason
  ``integrity``), or the server refuses it for good, e.g. no such blob (reason
  ``refused``). A failed download never leaves a file behind.

Times come from the client's :class:`~noisewall.clock.Clock`. The rows refer
to incoming history entries by ``(peer, msg_id)``; the media key stays in the
history entry only.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from noisewall.messenger.profile import HistoryEntry, Profile

DownloadState = Literal["pending", "downloaded", "failed"]
FailureReason = Literal["unavailable", "refused", "integrity"]

_SCHEMA = ("""
CREATE TABLE IF NOT EXISTS media_downloads (
    peer TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'downloaded', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,  -- failed attempts so far
    next_attempt REAL NOT NULL,           -- a pending download waits until then
    reason TEXT,                          -- of the last failure
    error TEXT,                           -- the last failure, for the user
    path TEXT,                            -- once downloaded
    PRIMARY KEY (peer, msg_id)
)""", "CREATE INDEX IF NOT EXISTS media_downloads_due ON media_downloads (state, next_attempt)")
_COLUMNS = "d.peer, d.msg_id, d.state, d.attempts, d.next_attempt, d.reason, d.error, d.path"
_HISTORY_COLUMNS = "h.peer, h.msg_id, h.direction, h.kind, h.body, h.ts, h.status"


@dataclass(frozen=True)
class RetryPolicy:
    """How often a download that failed for a passing reason is tried again.

    ``attempts`` failed attempts in all (at least 1), then the download is
    ``failed``; after the n-th failure the next try waits
    ``first_delay * 2**(n-1)`` seconds, at most ``max_delay``.
    """

    attempts: int = 8
    first_delay: float = 30.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError("a retry policy needs attempts >= 1 and "
                             "0 <= first_delay <= max_delay")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        # Explicit retries go on counting past ``attempts``: keep the power finite.
        return min(self.first_delay * 2.0 ** min(failures - 1, 64), self.max_delay)


@dataclass(frozen=True)
class MediaDownload:
    """One media message's download state (see the module documentation)."""

    peer: str
    msg_id: str
    state: DownloadState
    attempts: int
    next_attempt: float
    reason: FailureReason | None
    error: str | None
    path: Path | None

    @property
    def retryable(self) -> bool:
        """Whether trying again could help (a tampered or refused blob stays failed)."""
        return self.state == "pending" or (self.state == "failed"
                                           and self.reason == "unavailable")

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view (``next_attempt`` only while pending)."""
        view: dict[str, Any] = {"state": self.state, "attempts": self.attempts}
        if self.state == "pending":
            view["next_attempt"] = self.next_attempt
        if self.reason is not None and self.state != "downloaded":
            view["reason"] = self.reason
            view["error"] = self.error
        if self.path is not None:
            view["file"] = str(self.path)
        return view

    def describe(self) -> str:
        """One line for people: where the file is, or why there is none yet."""
        if self.state == "downloaded":
            return str(self.path)
        if self.state == "pending":
            if self.attempts == 0:
                return "download pending"
            return (f"download pending ({_attempts(self.attempts)} failed, next try after "
                    f"{_utc(self.next_attempt)}): {self.error}")
        if self.reason == "unavailable":
            return f"download failed after {_attempts(self.attempts)}: {self.error}"
        return f"download failed: {self.error}"


def _attempts(count: int) -> str:
    return f"{count} attempt" + ("" if count == 1 else "s")


def _utc(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class MediaDownloads:
    """The ``media_downloads`` table on a profile's connection.

    Each method is one statement, so it commits on its own, or joins the
    transaction the caller has open (as :meth:`add` does in the receive
    commit).
    """

    def __init__(self, profile: Profile, policy: RetryPolicy | None = None) -> None:
        self._profile = profile
        self._db = profile.db
        self.policy = policy or RetryPolicy()
        for statement in _SCHEMA:  # not executescript: it would commit a caller's transaction
            self._db.execute(statement)

    def add(self, peer: str, msg_id: str, now: float) -> None:
        """A new media message: its download is pending and due at once."""
        self._db.execute("INSERT OR IGNORE INTO media_downloads (peer, msg_id, state, "
                         "next_attempt) VALUES (?, ?, 'pending', ?)", (peer, msg_id, now))

    def downloaded(self, peer: str, msg_id: str, path: Path) -> MediaDownload:
        """The file is in place."""
        return self._update(peer, msg_id, "state = 'downloaded', path = ?, reason = NULL, "
                            "error = NULL", (str(path),))

    def failed(self, peer: str, msg_id: str, reason: FailureReason, error: str,
               now: float) -> MediaDownload:
        """Count a failed attempt: pending again after a backoff, or failed for good."""
        current = self.get(peer, msg_id)
        attempts = (current.attempts if current is not None else 0) + 1
        give_up = reason != "unavailable" or attempts >= self.policy.attempts
        return self._update(
            peer, msg_id, "state = ?, attempts = ?, next_attempt = ?, reason = ?, error = ?",
            ("failed" if give_up else "pending", attempts,
             now + self.policy.delay(attempts), reason, error))

    def _update(self, peer: str, msg_id: str, assignments: str,
                values: tuple[Any, ...]) -> MediaDownload:
        self._db.execute(f"UPDATE media_downloads SET {assignments} "  # noqa: S608 - fixed text
                         "WHERE peer = ? AND msg_id = ?", (*values, peer, msg_id))
        updated = self.get(peer, msg_id)
        if updated is None:
            raise LookupError(f"no media download for message {msg_id!r}")
        return updated

    def get(self, peer: str, msg_id: str) -> MediaDownload | None:
        """One message's download, or None if it is not a received media message."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM media_downloads d "  # noqa: S608
                               "WHERE d.peer = ? AND d.msg_id = ?", (peer, msg_id)).fetchone()
        return None if row is None else _download(row)

    def all(self) -> dict[tuple[str, str], MediaDownload]:
        """Every download by ``(peer, msg_id)`` (for showing the history)."""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM media_downloads d")  # noqa: S608
        return {(row[0], row[1]): _download(row) for row in rows}

    def due(self, now: float, limit: int | None = None
            ) -> list[tuple[HistoryEntry, MediaDownload]]:
        """Pending downloads whose time has come (``now`` = inf: all), longest waiting first."""
        return self._with_entries(
            "d.state = 'pending' AND d.next_attempt <= ? ORDER BY d.next_attempt LIMIT ?",
            (now, -1 if limit is None else limit))  # LIMIT -1: no limit

    def for_messages(self, msg_ids: Iterable[str]) -> list[tuple[HistoryEntry, MediaDownload]]:
        """The received media messages with these ids, in history order."""
        wanted = sorted(set(msg_ids))
        marks = ", ".join("?" * len(wanted))
        return self._with_entries(f"d.msg_id IN ({marks}) ORDER BY h.ts", tuple(wanted))

    def _with_entries(self, where: str, values: tuple[Any, ...]
                      ) -> list[tuple[HistoryEntry, MediaDownload]]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS}, {_HISTORY_COLUMNS} FROM media_downloads d "  # noqa: S608
            "JOIN history h ON h.peer = d.peer AND h.msg_id = d.msg_id AND h.direction = 'in' "
            f"WHERE {where}", values).fetchall()
        return [(self._profile.entry(row[8:]), _download(row)) for row in rows]


def _download(row: tuple[Any, ...]) -> MediaDownload:
    return MediaDownload(peer=row[0], msg_id=row[1], state=row[2], attempts=int(row[3]),
                         next_attempt=float(row[4]), reason=row[5], error=row[6],
                         path=None if row[7] is None else Path(row[7]))
