"""A fresh server data folder: nothing in it is open to the group or to others."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.mediaclient import upload
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer
from noisewall.noise import dh_function
from noisewall.records.endpoint import Endpoint


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual umask 022, under which a plain ``open`` makes files world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def loose(root: Path) -> list[str]:
    """Every path under ``root`` (and root) with a group or other permission bit, and its mode."""
    paths = [root, *root.rglob("*")]
    return [f"{path.relative_to(root.parent)} {stat.filemode(path.stat().st_mode)}"
            for path in paths if path.stat().st_mode & 0o077]


@pytest.mark.usefixtures("permissive_umask")
async def test_a_fresh_data_dir_database_and_blobs_are_private(tmp_path: Path) -> None:
    data = tmp_path / "server"
    async with ChatServer(data, listen=Endpoint("127.0.0.1", 0)) as chat:
        media = MediaServer(data / "media", chat.authorize_media)
        port = (await media.start()).address.port
        chat.media = media.announcement(f"https://127.0.0.1:{port}")
        try:
            alice = await ChatConnection.open(*chat.address,
                                              dh_function("25519").generate_keypair(), None)
            welcome = await alice.request({"type": "register", "name": "alice"})
            await alice.request({"type": "send", "to": "alice", "msg_id": "m1", "envelope": {}})
            blob = tmp_path / "blob"
            blob.write_bytes(b"an encrypted blob")
            await upload(welcome["media"]["url"], welcome["media"]["token"], media.fingerprint,
                         blob)
            await alice.close()
            names = {path.name for path in data.rglob("*")}
            assert {"chat.sqlite3", "chat.sqlite3-wal", "chat.sqlite3-shm", "blobs"} <= names
            assert len(list(media.blob_dir.iterdir())) == 1
            assert loose(data) == []
        finally:
            await media.close()
