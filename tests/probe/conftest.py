"""A real messenger (chat + HTTPS media) in-process on loopback, for the probes to measure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer


@dataclass
class Messenger:
    chat: ChatServer
    media: MediaServer
    chat_port: int
    media_port: int

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.chat_port)

    @property
    def media_url(self) -> str:
        """By name, so a TLS ClientHello carries an SNI a censor can match."""
        return f"https://localhost:{self.media_port}"


@pytest.fixture
async def messenger(tmp_path: Path) -> AsyncIterator[Messenger]:
    data = tmp_path / "server"
    async with ChatServer(data) as chat:
        media = MediaServer(data / "media", chat.authorize_media)
        media_port = await media.start("127.0.0.1", 0)
        chat.media = {"url": f"https://127.0.0.1:{media_port}",
                      "fingerprint": media.fingerprint.hex()}
        try:
            chat_port = await chat.start("127.0.0.1", 0)
            yield Messenger(chat, media, chat_port, media_port)
        finally:
            await media.close()
