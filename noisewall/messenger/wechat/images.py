"""Perceptual hashes of images (pHash, 64 bits) for the image lists, via ``imagehash`` on Pillow."""

from __future__ import annotations

import io
import warnings

import imagehash
from PIL import Image, UnidentifiedImageError

#: Largest image (width x height) the server decodes: a small file must not unpack into gigabytes.
MAX_PIXELS = 4096 * 4096


class ImageError(ValueError):
    """Bytes that are not an image Pillow can decode (or one too large to decode safely)."""


def perceptual_hash(data: bytes) -> imagehash.ImageHash:
    """The pHash of the image in ``data``; :class:`ImageError` if it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(f"image of {width}x{height} pixels exceeds {MAX_PIXELS}")
                image.load()
                return imagehash.phash(image)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"not a readable image: {type(exc).__name__}: {exc}") from None


def parse_hash(text: str) -> imagehash.ImageHash:
    """A pHash written as 16 hex digits; :class:`ValueError` otherwise."""
    if len(text) != 16 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"{text!r} is not a 64-bit perceptual hash (16 hex digits)")
    return imagehash.hex_to_hash(text.lower())
