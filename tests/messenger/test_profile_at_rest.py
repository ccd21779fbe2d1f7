"""What a client profile leaves on disk: owner-only permissions, no plaintext history.

A real chat server and HTTPS media server run in this process on loopback;
the clients are the real :class:`MessengerClient` over real sockets.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger.client import MessengerClient
from noisewall.messenger.profile import Profile
from tests.messenger.loopback_messenger import running_messenger


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    async with running_messenger(tmp_path / "server") as address:
        yield address


async def _exchange(tmp_path: Path, server: str, text: str) -> Path:
    """Alice sends Bob ``text`` and a photo; Bob receives both. Bob's profile folder."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(os.urandom(20_000))
    async with MessengerClient.open(tmp_path / "bob") as bob:
        await bob.register("bob", server)
        async with MessengerClient.open(tmp_path / "alice") as alice:
            await alice.register("alice", server)
            await alice.send_text("bob", text)
            await alice.send_media("bob", "photo", photo)
        received = await bob.receive(wait=1.0)
        assert {item.entry.kind for item in received} == {"text", "photo"}
        assert all(item.media_path is not None for item in received if item.entry.kind == "photo")
    return tmp_path / "bob"


async def test_a_fresh_profile_is_readable_by_its_owner_only(tmp_path: Path, server: str) -> None:
    old_umask = os.umask(0o022)  # the usual default, which would leave files 0644
    try:
        profile = await _exchange(tmp_path, server, "hello")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(profile.stat().st_mode) == 0o700
    paths = list(profile.rglob("*"))
    assert any(path.parent.name == "media" for path in paths)  # the downloaded photo is there
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"


async def test_a_profile_folder_made_beforehand_becomes_owner_only(tmp_path: Path,
                                                                   server: str) -> None:
    old_umask = os.umask(0o022)
    try:
        (tmp_path / "bob").mkdir()  # as `mkdir bob` leaves it: 0755
        profile = await _exchange(tmp_path, server, "hello")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(profile.stat().st_mode) == 0o700
    for path in profile.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def _files_holding(folder: Path, needles: list[bytes]) -> list[str]:
    """Every file under ``folder`` (database, WAL, shared memory, media...) holding a needle."""
    return [f"{path.name}: {needle!r}" for path in folder.rglob("*") if path.is_file()
            for needle in needles if needle in path.read_bytes()]


async def test_a_message_just_received_leaves_no_plaintext_in_the_profile(
        tmp_path: Path, server: str) -> None:
    text = f"the door code is {secrets.token_hex(8)}"
    label = f"safe house {secrets.token_hex(8)}"
    async with MessengerClient.open(tmp_path / "bob") as bob, \
            MessengerClient.open(tmp_path / "alice") as alice:
        await bob.register("bob", server)
        await alice.register("alice", server)
        await alice.send_text("bob", text)
        await alice.send_location("bob", 39.9042, 116.4074, label)
        received = await bob.receive(wait=1.0)
        assert sorted(item.entry.kind for item in received) == ["location", "text"]
        # While both clients are open: the fresh pages are still in the WAL files.
        assert (tmp_path / "bob" / "profile.sqlite3-wal").stat().st_size > 0
        needles = [text.encode(), label.encode()]
        assert _files_holding(tmp_path / "bob", needles) == []
        assert _files_holding(tmp_path / "alice", needles) == []  # the sender's copy too
        assert [entry.body.get("text") or entry.body.get("label")
                for entry in bob.profile.history("alice")] == [text, label]
    assert _files_holding(tmp_path / "bob", needles) == []


# A profile as noisewall wrote it before history was sealed: bodies as JSON text.
_OLD_SCHEMA = """
CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE history (
    peer TEXT NOT NULL, msg_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    kind TEXT NOT NULL, body TEXT NOT NULL, ts REAL NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (peer, direction, msg_id)
);
CREATE INDEX history_by_id ON history (msg_id);
CREATE TABLE outbox (msg_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, envelope TEXT NOT NULL,
                     created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0);
"""


def test_an_old_plaintext_profile_is_sealed_when_opened(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir(mode=0o700)
    old = sqlite3.connect(folder / "profile.sqlite3", isolation_level=None)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(_OLD_SCHEMA)
    old.execute("INSERT INTO settings VALUES ('name', 'bob'), ('noise_private', ?)",
                (secrets.token_hex(32),))
    bodies = [{"kind": "text", "text": f"old secret {n} {secrets.token_hex(8)}", "id": f"m{n}"}
              for n in range(50)]
    for n, body in enumerate(bodies):
        old.execute("INSERT INTO history VALUES ('alice', ?, 'in', 'text', ?, ?, 'received')",
                    (f"m{n}", json.dumps(body), 1_700_000_000 + n))
    deleted = f"deleted secret {secrets.token_hex(8)}"
    old.execute("INSERT INTO history VALUES ('alice', 'gone', 'in', 'text', ?, 0, 'received')",
                (json.dumps({"kind": "text", "text": deleted}),))
    old.execute("DELETE FROM history WHERE msg_id = 'gone'")  # still in a free page
    needles = [body["text"].encode() for body in bodies] + [deleted.encode()]
    assert _files_holding(folder, needles)  # the old format holds them in the clear
    try:
        profile = Profile(folder)  # the old connection stays open, as another process might
        try:
            assert [entry.body for entry in profile.history("alice")] == bodies
            assert profile.find("m7") is not None
            kinds = profile.db.execute("SELECT DISTINCT typeof(body) FROM history").fetchall()
            assert kinds == [("blob",)]
        finally:
            profile.close()
        assert _files_holding(folder, needles) == []
        reopened = Profile(folder)  # sealed once: readable again, nothing to migrate
        assert [entry.body for entry in reopened.history()] == bodies
        reopened.close()
    finally:
        old.close()
    assert _files_holding(folder, needles) == []
