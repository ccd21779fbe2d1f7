"""A page as a real browser draws it: Debian's Chromium, headless, to a PNG read back as pixels.

``chromium_path()`` skips the test when Chromium is not installed; with
``NOISEWALL_REQUIRE_NETNS=1`` (``.ci/run`` sets it, and installs Chromium)
its absence fails the test instead (:func:`tests.netns.require_program`).
``screenshot()`` starts the browser once; its whole process group is killed
afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.netns import require_program

#: Chromium's flags for a one-shot headless run as root, offline and with a profile of its own.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--force-device-scale-factor=1")
TIMEOUT = 60.0

Pixels = npt.NDArray[np.uint8]


def chromium_path() -> str:
    """Debian's Chromium; skips (or under CI fails) the test when it is not installed."""
    require_program("chromium", "chromium")
    chromium = shutil.which("chromium")
    assert chromium is not None
    return chromium


def screenshot(chromium: str, page: Path, out: Path, *, width: int, height: int) -> Pixels:
    """Open ``page`` in headless ``chromium`` (a ``width`` x ``height`` window) and return
    its pixels as an (height, width, 3) RGB array; the PNG is kept at ``out``."""
    log = out.with_suffix(".log")
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={out.parent / 'chromium-profile'}",
             f"--window-size={width},{height}", f"--screenshot={out}", page.as_uri()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True)
        try:
            process.wait(timeout=TIMEOUT)
        finally:
            # Its zygote and renderers share its process group: none outlives the test.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert out.is_file(), f"chromium wrote no screenshot: {log.read_text(errors='replace')}"
    return png_rgb(out)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _unfilter(kind: int, line: Pixels, previous: Pixels, bpp: int) -> Pixels:
    """One scanline's bytes from its filtered bytes (PNG spec, section 9)."""
    if kind == 0:
        return line
    if kind == 1:  # Sub: a running sum per channel
        sums = line.reshape(-1, bpp).astype(np.int64).cumsum(axis=0) % 256
        return sums.reshape(-1).astype(np.uint8)
    if kind == 2:  # Up
        return ((line.astype(np.int64) + previous) % 256).astype(np.uint8)
    out = bytearray(line.tobytes())
    above = previous.tobytes()
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        corner = above[i - bpp] if i >= bpp else 0
        guess = (left + above[i]) // 2 if kind == 3 else _paeth(left, above[i], corner)
        out[i] = (out[i] + guess) % 256
    return np.frombuffer(bytes(out), dtype=np.uint8)


def png_rgb(path: Path) -> Pixels:
    """An 8-bit RGB or RGBA, non-interlaced PNG (as Chromium writes them) as RGB pixels."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    position, header, compressed = 8, b"", bytearray()
    while position < len(data):
        (size,) = struct.unpack(">I", data[position:position + 4])
        kind, body = data[position + 4:position + 8], data[position + 8:position + 8 + size]
        header = body if kind == b"IHDR" else header
        compressed += body if kind == b"IDAT" else b""
        position += 12 + size
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, colour in (2, 6), interlace) == (8, True, 0), f"{path}: unexpected PNG kind"
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(bytes(compressed)), dtype=np.uint8)
    lines = raw.reshape(height, width * bpp + 1)
    rows = np.zeros((height, width * bpp), dtype=np.uint8)
    previous = np.zeros(width * bpp, dtype=np.uint8)
    for y in range(height):
        rows[y] = previous = _unfilter(int(lines[y, 0]), lines[y, 1:], previous, bpp)
    return rows.reshape(height, width, bpp)[:, :, :3]
