"""A TCP (or TLS over TCP) connection as a byte stream for the tunnel and the censor.

An ``asyncio.BufferedProtocol`` instead of asyncio's streams, because the
tunnel's and the censor's bulk paths are bound by copies and allocations:
the kernel (or, under TLS, the decryption) writes into one reused receive
buffer (``recv_into``), and each read hands out that data with a single
copy. The receive buffer is shared by all streams of a thread (the data is
copied out before the loop reads anything else), so ten thousand idle
connections cost no receive buffers. A
``StreamReader`` copies twice more and grows fresh buffers, which costs page
faults at tunnel rates. Reading pauses while more than ``limit`` bytes wait
unread; writing follows the transport's high-water mark through
:meth:`drain`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

#: What the write methods take: bulk data is passed on without copying it to ``bytes``.
Buffer = bytes | bytearray | memoryview
#: Bytes one receive may fill (asyncio's own read size for sockets).
RECEIVE_BUFFER = 256 * 1024
_receive = threading.local()


def _receive_buffer() -> memoryview:
    """This thread's receive buffer (an event loop runs its callbacks one at a time)."""
    view: memoryview | None = getattr(_receive, "view", None)
    if view is None:
        view = _receive.view = memoryview(bytearray(RECEIVE_BUFFER))
    return view


#: Unread bytes beyond which the socket is no longer read.
DEFAULT_LIMIT = 1 << 20
#: The transport's write buffer high-water mark: large, so bulk writers wake rarely.
WRITE_HIGH_WATER = 1 << 20


class TcpStream(asyncio.BufferedProtocol):
    """One connection: ``read``/``write``/``drain``/``close``, and ``detach``."""

    def __init__(self, on_connected: Callable[[TcpStream], None] | None = None,
                 limit: int = DEFAULT_LIMIT) -> None:
        self._on_connected = on_connected
        self._limit = limit
        #: The most one receive takes from the socket.
        self._receive_size = min(RECEIVE_BUFFER, limit)
        self._view = memoryview(b"")
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._reading_paused = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None

    @classmethod
    async def connect(cls, host: str, port: int,
                      local_addr: tuple[str, int] | None = None) -> TcpStream:
        """Open a TCP connection."""
        loop = asyncio.get_running_loop()
        _, stream = await loop.create_connection(cls, host, port, local_addr=local_addr)
        return stream

    # --- protocol callbacks --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport; tell the owner (a server's handler) about the connection."""
        # uvloop's transports are transports without being asyncio.Transport subclasses.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if self._on_connected is not None:
            self._on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """The thread's shared receive buffer."""
        self._view = _receive_buffer()[:self._receive_size]
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        """Keep what arrived (one copy out of the reused buffer)."""
        self._chunks.append(bytes(self._view[:nbytes]))
        self._buffered += nbytes
        if self._buffered > self._limit and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        """The peer half-closed: reads return ``b""`` once the buffer is empty."""
        self._eof = True
        self._wake_reader()
        # Keep the connection open for our writes (half-close).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Wake everyone waiting; later reads see EOF (or the error), writes fail."""
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake_reader()
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(exc or ConnectionResetError("connection lost"))
            self._writable.exception()  # retrieved: nobody may be waiting

    def pause_writing(self) -> None:
        """The transport's buffer is over its high-water mark: :meth:`drain` waits."""
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        """Below the low-water mark again."""
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def bound_buffers(self, limit: int) -> None:
        """Hold at most about ``2 * limit`` bytes for this connection, each way.

        Reading pauses beyond ``limit`` unread bytes and one receive takes at
        most ``limit``; :meth:`drain` waits while more than ``limit`` bytes
        are queued for the peer. A slow consumer (a throttled censor flow)
        then leaves the rest in the kernel's socket buffers, where TCP's
        window pushes back on the sender.
        """
        self._limit = limit
        self._receive_size = min(RECEIVE_BUFFER, limit)
        if self._transport is None:
            return
        self._transport.set_write_buffer_limits(high=min(limit, WRITE_HIGH_WATER))
        if self._buffered > limit and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        elif self._reading_paused and self._buffered <= limit // 2:
            self._reading_paused = False
            self._transport.resume_reading()

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    # --- the byte stream -----------------------------------------------

    async def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` at end of stream.

        Raises ConnectionResetError once the bytes that arrived are read if
        the connection was lost to an error (a reset is not an end of stream).
        """
        while not self._chunks:
            if self._error is not None:
                raise ConnectionResetError(f"the connection was lost: {self._error}")
            if self._eof:
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        chunk = self._chunks.popleft()
        if len(chunk) > size:
            self._chunks.appendleft(chunk[size:])
            chunk = chunk[:size]
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered <= self._limit // 2 and self._transport:
            self._reading_paused = False
            self._transport.resume_reading()
        return chunk

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the stream: the next read returns them first."""
        if data:
            self._chunks.appendleft(data)
            self._buffered += len(data)
            self._wake_reader()

    def write(self, data: Buffer) -> None:
        """Queue bytes for the peer."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        if self._writable is not None and not self._writable.done():
            await asyncio.shield(self._writable)

    def can_write_eof(self) -> bool:
        """True if the transport can half-close (plain TCP; not TLS)."""
        return self._transport is not None and self._transport.can_write_eof()

    def write_eof(self) -> None:
        """Half-close our direction."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write_eof()

    def close(self) -> None:
        """Close the connection (without waiting)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close the connection at once, dropping unsent bytes."""
        if self._transport is not None:
            self._transport.abort()

    async def detach(self) -> tuple[socket.socket, bytes, bool]:
        """Take the connection away from asyncio, for a relay that moves bytes in the kernel.

        Waits until every byte written so far has left, stops reading, and
        returns a non-blocking duplicate of the socket (the caller owns it and
        closes it), the bytes that arrived but were not read, and whether the
        peer had already half-closed. The stream itself is closed; the
        connection lives on in the duplicate.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("only an open connection can be detached")
        transport.pause_reading()
        if transport.get_write_buffer_size():
            # A zero high-water mark: drain() now waits for an empty buffer.
            transport.set_write_buffer_limits(high=0, low=0)
            await self.drain()
        if self._error is not None:
            raise ConnectionResetError(f"the connection was lost: {self._error}")
        duplicate = transport.get_extra_info("socket").dup()
        duplicate.setblocking(False)
        pending = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        transport.close()
        return duplicate, pending, self._eof

    def get_extra_info(self, name: str) -> Any:
        """The transport's extra information (``peername``, ``socket``, ...)."""
        return self._transport.get_extra_info(name) if self._transport else None
