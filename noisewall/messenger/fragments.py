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

from noisewall.noise.errors import ConnectionClosedError, FramingError, MessageTooLongError
from noisewall.noise.stream import NoiseStream

FLAG_LAST = 0x00
FLAG_MORE = 0x01
_LAST = bytes((FLAG_LAST,))
_MORE = bytes((FLAG_MORE,))
#: The largest message either side reassembles: a little over the largest valid
#: request, so an oversized one still gets a ``too_large`` reply, not a hang-up.
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


class Reassembler:
    """Joins fragments back into messages of at most ``limit`` bytes (sans-IO)."""

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    @property
    def inside_message(self) -> bool:
        """True while fragments of an unfinished message are held."""
        return bool(self._parts)

    def feed(self, body: bytes) -> bytes | None:
        """Take one transport body; return the message it completes, if any.

        Raises :class:`FramingError` for a body without a valid flag and
        :class:`MessageTooLongError` once a message outgrows ``limit``.
        """
        if not body or body[0] not in (FLAG_LAST, FLAG_MORE):
            raise FramingError("transport body lacks a valid messenger fragment flag")
        if body[0] == FLAG_LAST and not self._parts:
            if len(body) - 1 > self.limit:
                raise MessageTooLongError(f"incoming message exceeds {self.limit} bytes")
            return body[1:]
        self._size += len(body) - 1
        if self._size > self.limit:
            raise MessageTooLongError(f"incoming message exceeds {self.limit} bytes")
        self._parts.append(body[1:])
        if body[0] == FLAG_MORE:
            return None
        message = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return message


async def send(stream: NoiseStream, message: bytes) -> None:
    """Send one chat message over ``stream``, in as many bodies as it needs."""
    if len(message) > MAX_MESSAGE:
        raise MessageTooLongError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}")
    for body in split(message, stream.max_message_size):
        await stream.send(body)


async def receive(stream: NoiseStream, limit: int = MAX_MESSAGE) -> AsyncIterator[bytes]:
    """Yield whole chat messages until the peer closes the stream at a message boundary."""
    reassembler = Reassembler(limit)
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
