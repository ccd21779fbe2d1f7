"""The replay filter: a recorded first message gets no answer, before or after a restart.

A censor that records a client's first handshake message and replays it (as
the GFW did against Shadowsocks) would otherwise get a server reply and learn
that a tunnel listens there. The server remembers the ephemeral key of every
first message it answered, the most recent ``capacity`` of them.

With a ``path`` that memory survives a restart: each key is appended to the
file (one unbuffered ``write``, so a killed process loses nothing the kernel
has) before the server answers, and a new filter reads the file back. The
file holds raw 32-byte keys and is rewritten with only the remembered ones
when it reaches twice ``capacity`` (4 MiB at the default), so its
size stays bounded. A server that cannot write the file keeps serving with
the in-memory filter and logs why.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger("noisewall.tunnel")

#: Bytes of the ephemeral public key at the start of a Noise IK first message.
EPHEMERAL_SIZE = 32
DEFAULT_CAPACITY = 65536


class ReplayFilter:
    """Remembers recent first-message ephemeral keys (in a file too, given ``path``)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, path: Path | None = None) -> None:
        self.capacity = capacity
        self.path = path
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._fd: int | None = None
        self._in_file = 0
        if path is not None:
            try:
                self._load(path)
                self._rewrite(path)
            except OSError as exc:
                log.warning("replay filter: cannot use %s (%s); remembering in memory only",
                            path, exc.strerror or type(exc).__name__)

    def first_use(self, ephemeral: bytes) -> bool:
        """True the first time ``ephemeral`` is seen (and now remembered), False for a replay."""
        if ephemeral in self._seen:
            return False
        self._remember(ephemeral)
        if self._fd is not None and self.path is not None:
            try:
                if self._in_file >= 2 * self.capacity:
                    self._rewrite(self.path)
                else:
                    os.write(self._fd, ephemeral)
                    self._in_file += 1
            except OSError as exc:
                log.warning("replay filter: cannot write %s (%s); remembering in memory only",
                            self.path, exc.strerror or type(exc).__name__)
                self.close()
        return True

    def close(self) -> None:
        """Close the file (the filter keeps working in memory)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _remember(self, ephemeral: bytes) -> None:
        self._seen[ephemeral] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def _load(self, path: Path) -> None:
        """The keys in ``path``, oldest first; a missing file is an empty one."""
        limit = 2 * self.capacity * EPHEMERAL_SIZE
        try:
            with path.open("rb") as file:
                size = file.seek(0, os.SEEK_END)
                # Whole keys only: a write cut short by a crash leaves a partial one at the end.
                start = max(0, size - limit)
                file.seek(start - start % EPHEMERAL_SIZE)
                data = file.read(limit)
        except FileNotFoundError:
            return
        for at in range(0, len(data) - EPHEMERAL_SIZE + 1, EPHEMERAL_SIZE):
            self._remember(data[at : at + EPHEMERAL_SIZE])

    def _rewrite(self, path: Path) -> None:
        """Replace the file with the remembered keys and keep it open for appending."""
        self.close()
        staged = path.with_name(path.name + ".new")
        with open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(b"".join(self._seen))
            file.flush()
            os.fsync(file.fileno())
        os.replace(staged, path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._in_file = len(self._seen)
