"""The real chat server and HTTPS media server, in this process on loopback (port 0)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer


@contextlib.asynccontextmanager
async def running_messenger(data: Path) -> AsyncIterator[str]:
    """Serve chat and media from ``data``; yields the chat address HOST:PORT."""
    async with ChatServer(data) as chat:
        media = MediaServer(data / "media", chat.authorize_media)
        media_port = await media.start("127.0.0.1", 0)
        chat.media = media.announcement(f"https://127.0.0.1:{media_port}")
        try:
            yield f"127.0.0.1:{await chat.start('127.0.0.1', 0)}"
        finally:
            await media.close()
