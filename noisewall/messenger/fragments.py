"""The messenger's fragmentation layer: chat messages larger than one Noise body.

A NoiseSocket transport body holds at most 65517 bytes (a WA frame 65519),
while a chat message may reach :data:`noisewall.messenger.wire.MAX_FRAME`. So
every transport body the messenger's client and server exchange starts with
one flag byte, ``0x01`` when more fragments of the same message follow and
``0x00`` on the last (or only) one; the receiver joins fragments up to a
``0x00``. This is the messenger's own protocol (docs/messenger.md), spoken on
top of plain NoiseSocket; :class:`NoiseStream` itself adds nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from noisewall.noise.errors import ConnectionClosedError, FramingError, MessageTooLongError
from noisewall.noise.stream import NoiseStream

FLAG_LAST = 0x00
FLAG_MORE = 0x01
_LAST = bytes((FLAG_LAST,))
_MORE = bytes((FLAG_MORE,))
#: The largest message either side receives before hanging up; a receiver holds
#: less (the server: one valid request), so an oversized one is counted, dropped
#: and answered ``too_large``, not held.
MAX_MESSAGE = 16 * 1024 * 1024


def split(message: bytes, max_body: int) -> Iterator[bytes]:
    """The transport bodies that carry ``message``: flag byte and up to ``max_body - 1`` bytes."""
    chunk = max_body - 1
    if len(message) <= chunk:  # the common case: one body, one copy
        yield _LAST + message
        return
    view = memoryview(message)
    for offset in range(0, len(message), chunk):
        end = offset + chunk
        yield (_MORE if end < len(message) else _LAST) + view[offset:end]


@dataclass(frozen=True)
class Oversized:
    """A message longer than the receiver holds: its fragments were counted and dropped."""

    size: int


class Reassembler:
    """Joins fragments back into messages (sans-IO), holding at most ``hold`` bytes.

    A message that outgrows ``hold`` is not kept: its later fragments are only
    counted, and its last one yields :class:`Oversized`, so a peer that never
    finishes a message costs ``hold`` bytes, not what it sent. A message that
    outgrows ``limit`` (default and at least ``hold``) ends the connection.
    """

    def __init__(self, limit: int = MAX_MESSAGE, hold: int | None = None) -> None:
        self.limit = limit
        self.hold = limit if hold is None else hold
        self._parts: list[bytes] = []
        self._size = 0
        self._inside = False

    @property
    def inside_message(self) -> bool:
        """True while an unfinished message is being received."""
        return self._inside

    @property
    def held(self) -> int:
        """Bytes of the unfinished message held right now."""
        return sum(len(part) for part in self._parts)

    def feed(self, body: bytes) -> bytes | Oversized | None:
        """Take one transport body; return the message it completes, if any.

        Raises :class:`FramingError` for a body without a valid flag and
        :class:`MessageTooLongError` once a message outgrows ``limit``.
        """
        if not body or body[0] not in (FLAG_LAST, FLAG_MORE):
            raise FramingError("transport body lacks a valid messenger fragment flag")
        self._size += len(body) - 1
        if self._size > self.limit:
            raise MessageTooLongError(f"incoming message exceeds {self.limit} bytes")
        if body[0] == FLAG_LAST and not self._inside:  # the common case: one body, one copy
            self._size = 0
            return body[1:] if len(body) - 1 <= self.hold else Oversized(len(body) - 1)
        if self._size <= self.hold:
            self._parts.append(body[1:])
        else:
            self._parts.clear()
        if body[0] == FLAG_MORE:
            self._inside = True
            return None
        size, parts = self._size, self._parts
        self._parts, self._size, self._inside = [], 0, False
        return b"".join(parts) if size <= self.hold else Oversized(size)


async def send(stream: NoiseStream, message: bytes) -> None:
    """Send one chat message over ``stream``, in as many bodies as it needs."""
    if len(message) > MAX_MESSAGE:
        raise MessageTooLongError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}")
    for body in split(message, stream.max_message_size):
        await stream.send(body)


async def receive(stream: NoiseStream, limit: int = MAX_MESSAGE) -> AsyncIterator[bytes]:
    """Yield whole chat messages until the peer closes the stream at a message boundary."""
    async for message in receive_bounded(stream, Reassembler(limit)):
        assert isinstance(message, bytes)  # hold == limit: a longer message raised instead
        yield message


async def receive_bounded(stream: NoiseStream,
                          reassembler: Reassembler) -> AsyncIterator[bytes | Oversized]:
    """As :func:`receive`, through ``reassembler``: a message over its ``hold`` is Oversized."""
    while True:
        try:
            body = await stream.receive()
        except ConnectionClosedError:
            if stream.peer_closed and not reassembler.inside_message:
                return
            raise
        message = reassembler.feed(body)
        if message is not None:
            yield message
