"""What a WeChat-mode server knows beyond the chat store: account regions and group chats.

Kept in its own SQLite file beside the chat store (``wechat.sqlite3``), so the
E2E server's schema is untouched. Calls are small and run in a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar, get_args

Region = Literal["mainland", "international"]
REGIONS: tuple[Region, ...] = get_args(Region)
#: Most members a group chat holds (WeChat's own limit is 500).
MAX_MEMBERS = 500

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS regions (
    name TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    linked TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    group_name TEXT NOT NULL REFERENCES groups(name),
    member TEXT NOT NULL,
    PRIMARY KEY (group_name, member)
);
"""


class DirectoryError(Exception):
    """A group or region request the directory refuses; ``code`` goes in the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def region_of(value: str) -> Region:
    """``value`` as a region; :class:`DirectoryError` (``bad_request``) if it is none."""
    for region in REGIONS:
        if value == region:
            return region
    raise DirectoryError("bad_request", f"region must be one of {', '.join(REGIONS)}")


class WeChatDirectory:
    """Regions (registration and linked number) and group memberships, durable."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    async def _run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = function(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result

        return await asyncio.to_thread(locked)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    async def set_region(self, name: str, region: Region | None) -> tuple[Region, str]:
        """Record ``name``'s registration region the first time; the stored one after that.

        Registering again (same key) never changes the region: filtering follows
        the number an account was registered with.
        """

        def run(db: sqlite3.Connection) -> tuple[Region, str]:
            row = db.execute("SELECT region, linked FROM regions WHERE name = ?",
                             (name,)).fetchone()
            if row is not None:
                return region_of(row[0]), str(row[1])
            if region is None:
                raise DirectoryError("bad_request", "a WeChat-mode server needs 'region' at "
                                     f"registration: {' or '.join(REGIONS)}")
            db.execute("INSERT INTO regions VALUES (?, ?, ?)", (name, region, region))
            return region, region

        return await self._run(run)

    async def link(self, name: str, linked: Region) -> tuple[Region, str]:
        """``name`` now links a number from ``linked``; returns (registration region, linked)."""

        def run(db: sqlite3.Connection) -> tuple[Region, str]:
            row = db.execute("SELECT region FROM regions WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise DirectoryError("not_registered", "register this key first")
            db.execute("UPDATE regions SET linked = ? WHERE name = ?", (linked, name))
            return region_of(row[0]), linked

        return await self._run(run)

    async def region(self, name: str) -> Region | None:
        """The region ``name`` registered with (None for an account without one)."""

        def run(db: sqlite3.Connection) -> Region | None:
            row = db.execute("SELECT region FROM regions WHERE name = ?", (name,)).fetchone()
            return None if row is None else region_of(row[0])

        return await self._run(run)

    async def create_group(self, group: str, owner: str) -> list[str]:
        """A new group with ``owner`` as its only member."""

        def run(db: sqlite3.Connection) -> list[str]:
            try:
                db.execute("INSERT INTO groups VALUES (?, ?)", (group, owner))
            except sqlite3.IntegrityError:
                raise DirectoryError("name_taken", f"the group {group!r} exists") from None
            db.execute("INSERT INTO members VALUES (?, ?)", (group, owner))
            return [owner]

        return await self._run(run)

    async def add_member(self, group: str, by: str, member: str) -> list[str]:
        """Add ``member`` (an account with a region) to ``group``; only a member may."""

        def run(db: sqlite3.Connection) -> list[str]:
            members = _members(db, group, by)
            if db.execute("SELECT 1 FROM regions WHERE name = ?", (member,)).fetchone() is None:
                raise DirectoryError("unknown_recipient", f"no account {member!r}")
            if member not in members:
                if len(members) >= MAX_MEMBERS:
                    raise DirectoryError("group_full", f"a group holds at most {MAX_MEMBERS}")
                db.execute("INSERT INTO members VALUES (?, ?)", (group, member))
                members.append(member)
            return members

        return await self._run(run)

    async def members(self, group: str, by: str) -> list[str]:
        """The members of ``group``, if ``by`` is one of them."""
        return await self._run(lambda db: _members(db, group, by))


def _members(db: sqlite3.Connection, group: str, by: str) -> list[str]:
    members = [str(row[0]) for row in db.execute(
        "SELECT member FROM members WHERE group_name = ? ORDER BY rowid", (group,))]
    if by not in members:
        # The same answer for "no such group" and "not a member": groups are not listed.
        raise DirectoryError("unknown_group", f"no group {group!r} with you in it")
    return members
