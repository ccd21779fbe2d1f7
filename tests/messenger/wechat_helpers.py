"""Shared pieces of the WeChat-mode tests: drawn images and list files."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import AsyncIterator
from pathlib import Path

from PIL import Image, ImageDraw

from noisewall.clock import Clock
from noisewall.messenger.server import ChatServer
from noisewall.messenger.wechat.images import perceptual_hash
from noisewall.messenger.wechat.lists import parse_filter_lists
from noisewall.records.endpoint import Endpoint


def drawing(seed: int, size: int = 128) -> Image.Image:
    """A picture of coloured ellipses, different for each seed."""
    rng = random.Random(seed)
    picture = Image.new("RGB", (size, size), "white")
    pen = ImageDraw.Draw(picture)
    for _ in range(12):
        x, y = rng.randrange(size), rng.randrange(size)
        box = (x, y, x + rng.randrange(10, 50), y + rng.randrange(10, 50))
        pen.ellipse(box, fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return picture


def encoded(picture: Image.Image, kind: str = "PNG", **options: int) -> bytes:
    """``picture`` as file bytes."""
    out = io.BytesIO()
    picture.save(out, kind, **options)
    return out.getvalue()


def near_copy(seed: int) -> bytes:
    """The picture of ``seed`` rescaled and recompressed, as a forwarded copy would be."""
    return encoded(drawing(seed).resize((200, 200)), "JPEG", quality=70)


@contextlib.asynccontextmanager
async def wechat_server(data: Path, lists: str, clock: Clock) -> AsyncIterator[ChatServer]:
    """A WeChat-mode server on loopback with ``lists`` (PHASH: the hash of drawing 1)."""
    banner = str(perceptual_hash(encoded(drawing(1))))
    chat = ChatServer(data, mode="wechat", filters=parse_filter_lists(
        lists.replace("PHASH", banner), "lists.yaml"), clock=clock, listen=Endpoint("127.0.0.1", 0))
    async with chat:
        yield chat
