"""Shared pieces of the WeChat-mode tests: drawn images and list files."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


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
