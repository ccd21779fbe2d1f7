"""The real chat server and HTTPS media server, in this process on loopback (port 0)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer
from noisewall.records.endpoint import Endpoint


@contextlib.asynccontextmanager
async def running_messenger(data: Path) -> AsyncIterator[str]:
    """Serve chat and media from ``data``; yields the chat address HOST:PORT."""
    chat = ChatServer(data, listen=Endpoint("127.0.0.1", 0))
    async with MediaServer(data / "media", chat.authorize_media) as media:
        chat.media = media.announcement(f"https://127.0.0.1:{media.address.port}")
        async with chat:
            yield f"127.0.0.1:{chat.address.port}"
