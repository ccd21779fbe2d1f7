"""A TLS connection driven straight by the event loop: a non-blocking ``ssl.SSLSocket``.

asyncio's own TLS (``loop.start_tls``) runs OpenSSL on memory BIOs: every
received byte is copied into the BIO and every sent byte out of it, and
Python code runs once per 16 KiB record on both paths. That was most of
what the ``tls`` tunnel spent beyond AES itself. Here OpenSSL reads from and
writes to the socket itself: a read decrypts as many records as have
arrived into one fresh buffer (handed out without a copy), a write encrypts
and sends as many records as the socket takes in one call, and the loop
only watches the file descriptor.

Retries follow OpenSSL's rule for non-blocking writes: a write that could
not go out is repeated with the same bytes (Python's ``ssl`` allows the
buffer to move).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import Any

from noisewall.tcp_stream import WRITE_HIGH_WATER, Buffer

_WOULD_BLOCK = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError)


class TlsStream:
    """One TLS connection: ``read``/``write``/``drain``/``close`` like a :class:`TcpStream`."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._pending: deque[Buffer] = deque()
        self._pending_size = 0
        self._writing = False
        self._drained: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._eof = False
        self._closing = False
        self._closed = False

    @classmethod
    async def handshake(cls, sock: socket.socket, context: ssl.SSLContext, *,
                        server_side: bool = False,
                        server_hostname: str | None = None) -> TlsStream:
        """Run a TLS handshake on the connected non-blocking ``sock`` (which it then owns)."""
        wrapped = context.wrap_socket(sock, server_side=server_side,
                                      server_hostname=server_hostname,
                                      do_handshake_on_connect=False)
        stream = cls(wrapped)
        try:
            while True:
                try:
                    wrapped.do_handshake()
                    return stream
                except ssl.SSLWantReadError:
                    await stream._ready(writable=False)
                except ssl.SSLWantWriteError:
                    await stream._ready(writable=True)
        except BaseException:
            stream.abort()
            raise

    async def _ready(self, writable: bool) -> None:
        """Wait until the socket is readable (or writable), or the stream is closed."""
        waiter = self._waiter = self._loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        if writable:
            self._loop.add_writer(self._fd, wake)
        else:
            self._loop.add_reader(self._fd, wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if not self._closed:
                if writable:
                    self._loop.remove_writer(self._fd)
                else:
                    self._loop.remove_reader(self._fd)

    # --- reading -------------------------------------------------------

    async def read(self, size: int) -> bytes | bytearray:
        """Up to ``size`` bytes, as many records as have arrived; ``b""`` at end of stream.

        The result is a fresh buffer that nothing else writes to. Raises
        ConnectionResetError if the connection broke (not at a clean close).
        """
        while True:
            data, blocked_on_write = self._read_now(size)
            if data is not None:
                return data
            if blocked_on_write:
                # TLS wants to answer (a key update) while our own writes may hold
                # the write watch: retry shortly instead of taking that watch over.
                await asyncio.sleep(0.001)
            else:
                await self._ready(writable=False)

    def _read_now(self, size: int) -> tuple[bytes | bytearray | None, bool]:
        """What can be read without waiting (None: nothing yet), and whether TLS needs a write."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._error is not None:
            raise ConnectionResetError(f"the connection was lost: {self._error}")
        if self._eof:
            return b"", False
        buffer = bytearray(size)
        filled = 0
        blocked_on_write = False
        with memoryview(buffer) as view:
            while filled < size:
                try:
                    received = self._sock.recv_into(view[filled:])
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLWantWriteError:
                    blocked_on_write = True
                    break
                except (ssl.SSLError, OSError) as exc:
                    # Bytes that arrived before the error are delivered first.
                    self._error = exc
                    if filled:
                        break
                    raise ConnectionResetError(f"the connection was lost: {exc}") from None
                if received == 0:
                    self._eof = True
                    break
                filled += received
        if filled == 0:
            return (b"", False) if self._eof else (None, blocked_on_write)
        del buffer[filled:]
        return buffer, False

    # --- writing -------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Send ``data`` (what the socket does not take now is kept and sent later).

        ``data`` must not change afterwards: unsent bytes are kept by reference.
        """
        if self._closed or self._closing or self._error is not None:
            raise ConnectionResetError("the connection is closed")
        if not data:
            return
        if not self._pending:
            sent = self._send(data)
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        self._pending.append(data)
        self._pending_size += len(data)
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._flush)

    def _send(self, data: Buffer) -> int:
        """Bytes of ``data`` sent now (0 if the socket is full)."""
        try:
            return self._sock.send(data)
        except _WOULD_BLOCK:
            return 0
        except (ssl.SSLError, OSError) as exc:
            self._fail(exc)
            raise ConnectionResetError(f"the connection was lost: {exc}") from None

    def _flush(self) -> None:
        """The socket is writable: send what is pending (same bytes first, as OpenSSL needs)."""
        pending = self._pending
        try:
            while pending:
                head = pending[0]
                sent = self._send(head)
                if sent == 0:
                    return
                self._pending_size -= sent
                if sent == len(head):
                    pending.popleft()
                else:
                    pending[0] = memoryview(head)[sent:]
        except ConnectionResetError:
            return
        finally:
            drained = self._drained
            if drained and not drained.done() and self._pending_size <= WRITE_HIGH_WATER // 4:
                drained.set_result(None)
        self._writing = False
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._close_now()

    async def drain(self) -> None:
        """Wait until fewer than ``WRITE_HIGH_WATER`` bytes wait to be sent."""
        while True:
            if self._closed or self._error is not None:
                raise ConnectionResetError("the connection is closed")
            if self._pending_size <= WRITE_HIGH_WATER:
                return
            if self._drained is None or self._drained.done():
                self._drained = self._loop.create_future()
            await asyncio.shield(self._drained)

    # --- closing -------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._pending.clear()
        self._pending_size = 0
        self._close_now()

    def close(self) -> None:
        """Close once what was written has been sent (without waiting here)."""
        if self._closed or self._closing:
            return
        self._closing = True
        if not self._pending:
            self._close_now()

    def abort(self) -> None:
        """Close at once, dropping unsent bytes."""
        self._pending.clear()
        self._pending_size = 0
        self._close_now()

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("the connection is closed"))
            self._drained.exception()  # retrieved: nobody may be waiting
        with contextlib.suppress(OSError):
            self._sock.close()

    def get_extra_info(self, name: str) -> Any:
        """``ssl_object`` (the ``SSLSocket``), ``peername`` or ``sockname``, like a transport's."""
        if name == "ssl_object":
            return self._sock
        with contextlib.suppress(OSError):
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        return None
