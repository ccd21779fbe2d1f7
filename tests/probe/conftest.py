"""A real messenger (chat + HTTPS media) in-process on loopback, for the probes to measure."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from noisewall.lab.runner import memory_folder
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer
from noisewall.records.endpoint import Endpoint


@dataclass
class Messenger:
    chat: ChatServer
    media: MediaServer
    chat_port: int
    media_port: int

    @property
    def server(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.chat_port)

    @property
    def media_url(self) -> str:
        """By name, so a TLS ClientHello carries an SNI a censor can match."""
        return f"https://localhost:{self.media_port}"


@contextlib.asynccontextmanager
async def _running(data: Path, server_name: str | None) -> AsyncIterator[Messenger]:
    chat = ChatServer(data, listen=Endpoint("127.0.0.1", 0))
    async with MediaServer(data / "media", chat.authorize_media,
                           server_name=server_name) as media:
        media_port = media.address.port
        chat.media = media.announcement(f"https://127.0.0.1:{media_port}")
        async with chat:
            yield Messenger(chat, media, chat.address.port, media_port)


@pytest.fixture
def server_data() -> Iterator[Path]:
    """The server's folder, in memory where possible: the probes time the chat server's
    acknowledgements, which wait for its database commit, and a busy disk's fsyncs would
    show up as throttling."""
    with tempfile.TemporaryDirectory(prefix="noisewall-probe-test-", dir=memory_folder()) as data:
        yield Path(data)


@pytest.fixture
async def messenger(server_data: Path) -> AsyncIterator[Messenger]:
    async with _running(server_data, None) as running:
        yield running


MEDIA_NAME = "mmg.example"


@pytest.fixture
async def named_messenger(server_data: Path) -> AsyncIterator[Messenger]:
    """The media server goes by :data:`MEDIA_NAME`, announced with its credentials."""
    async with _running(server_data, MEDIA_NAME) as running:
        yield running
