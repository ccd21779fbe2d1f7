"""What a client profile leaves on disk: owner-only permissions, no plaintext history.

A real chat server and HTTPS media server run in this process on loopback;
the clients are the real :class:`MessengerClient` over real sockets.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger.app import MessengerClient
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
