"""A TLS connection driven straight by the event loop, in large batches.

asyncio's own TLS (``loop.start_tls``, ``sslproto``) moves bytes through
several layers of Python per 16 KiB record. A blocking or non-blocking
``ssl.SSLSocket`` avoids those copies but makes OpenSSL read every record
with two system calls (header, then body: Python cannot turn on read-ahead)
and send every record with one, and on loopback each ``send`` also runs the
peer's TCP receive path: measured, that cost as much as it saved. Here
OpenSSL works on memory BIOs and the socket is read and written in large
pieces: one ``recv`` takes up to 256 KiB of records, one ``SSLObject.write``
encrypts everything a caller wrote, and one ``send`` hands it to the kernel.
The loop keeps watching the socket between reads instead of registering
and unregistering it every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import deque
from typing import Any, cast

from noisewall.tcp_stream import WRITE_HIGH_WATER, Buffer

#: Bytes of records one ``recv`` may take (and plaintext one read may return).
RECEIVE_SIZE = 256 * 1024


class TlsStream:
    """One TLS connection: ``read``/``write``/``drain``/``close`` like a :class:`TcpStream`."""

    def __init__(self, sock: socket.socket, ssl_object: ssl.SSLObject,
                 incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._ssl = ssl_object
        self._incoming = incoming
        self._outgoing = outgoing
        self._loop = asyncio.get_running_loop()
        self._received = memoryview(bytearray(RECEIVE_SIZE))
        self._pending: deque[Buffer] = deque()
        self._pending_size = 0
        self._writing = False
        self._drained: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._watching = False
        self._error: BaseException | None = None
        self._socket_eof = False
        self._eof = False
        self._closing = False
        self._closed = False

    @classmethod
    async def handshake(cls, sock: socket.socket, context: ssl.SSLContext, *,
                        server_side: bool = False,
                        server_hostname: str | None = None) -> TlsStream:
        """Run a TLS handshake on the connected non-blocking ``sock`` (which it then owns)."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ssl_object = context.wrap_bio(incoming, outgoing, server_side=server_side,
                                      server_hostname=server_hostname)
        stream = cls(sock, ssl_object, incoming, outgoing)
        try:
            while True:
                try:
                    ssl_object.do_handshake()
                except ssl.SSLWantReadError:
                    stream._send_records()
                    await stream._receive_records()
                    continue
                stream._send_records()
                return stream
        except BaseException:
            stream.abort()
            raise

    # --- reading -------------------------------------------------------

    async def _readable(self) -> None:
        """Wait until the socket is readable, or the stream is closed.

        The watch stays registered across reads (registering it per read cost
        two ``epoll_ctl`` calls and the selector's bookkeeping every time); it
        is dropped only when it fires with no reader waiting.
        """
        waiter = self._waiter = self._loop.create_future()
        if not self._watching:
            self._watching = True
            self._loop.add_reader(self._fd, self._on_readable)
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_readable(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._watching = False
            self._loop.remove_reader(self._fd)
        elif not waiter.done():
            waiter.set_result(None)

    async def _receive_records(self) -> None:
        """Move the records that arrived (waiting for some) into OpenSSL."""
        while True:
            if self._closed:
                raise ConnectionResetError("the connection is closed")
            try:
                received = self._sock.recv_into(self._received)
            except (BlockingIOError, InterruptedError):
                await self._readable()
                continue
            except OSError as exc:
                self._error = exc
                raise ConnectionResetError(f"the connection was lost: {exc}") from None
            if received == 0:
                self._socket_eof = True
                self._incoming.write_eof()
            else:
                self._incoming.write(self._received[:received])
            return

    async def read(self, size: int) -> bytes | bytearray:
        """Up to ``size`` bytes, every record that has arrived; ``b""`` at end of stream.

        The result is a fresh buffer that nothing else writes to. Raises
        ConnectionResetError if the connection broke (not at a clean close).
        """
        while True:
            data = self._decrypt(size)
            if data is not None:
                return data
            if self._socket_eof:
                self._eof = True
                return b""
            await self._receive_records()

    def _decrypt(self, size: int) -> bytes | bytearray | None:
        """The plaintext OpenSSL can give now (None: it needs more records)."""
        if self._closed:
            raise ConnectionResetError("the connection is closed")
        if self._error is not None:
            raise ConnectionResetError(f"the connection was lost: {self._error}")
        if self._eof:
            return b""
        arrived = self._incoming.pending + self._ssl.pending()
        if not arrived and not self._socket_eof:
            return None  # nothing to decrypt: skip a read that could only fail
        # One record past what arrived at most: a fresh buffer is zeroed, not 256 KiB for 16.
        size = min(size, arrived + 16384)
        buffer = bytearray(size)
        filled = 0
        with memoryview(buffer) as view:
            while filled < size:
                try:
                    # With a buffer it returns a count (typeshed says bytes).
                    decrypted = cast(int, self._ssl.read(size - filled, view[filled:]))
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    # A close_notify, or a bare TCP close (ragged EOFs are an end, as for HTTPS).
                    self._eof = True
                    break
                except ssl.SSLError as exc:
                    self._error = exc
                    if filled:
                        break
                    raise ConnectionResetError(f"TLS failed: {exc}") from None
                if decrypted == 0:
                    self._eof = True
                    break
                filled += decrypted
        # Records OpenSSL answers by itself (a key update) go out now.
        self._send_records()
        if filled == 0:
            return b"" if self._eof else None
        del buffer[filled:]
        return buffer

    # --- writing -------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Encrypt ``data`` now and send the records (what the socket does not take waits)."""
        if self._closed or self._closing or self._error is not None:
            raise ConnectionResetError("the connection is closed")
        if data:
            try:
                self._ssl.write(data)
            except ssl.SSLError as exc:
                self._fail(exc)
                raise ConnectionResetError(f"TLS failed: {exc}") from None
            self._send_records()

    def _send_records(self) -> None:
        """Send what OpenSSL produced, in one piece, behind anything still waiting."""
        if not self._outgoing.pending:
            return
        records = self._outgoing.read()
        if self._pending or self._closed:
            self._pending.append(records)
            self._pending_size += len(records)
            return
        sent = self._send(records)
        if sent < len(records) and not self._closed:
            self._pending.append(memoryview(records)[sent:])
            self._pending_size += len(records) - sent
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._fd, self._flush)

    def _send(self, data: Buffer) -> int:
        """Bytes of ``data`` the socket took now."""
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fail(exc)
            return 0

    def _flush(self) -> None:
        """The socket is writable: send what is waiting."""
        pending = self._pending
        while pending and not self._closed:
            head = pending[0]
            sent = self._send(head)
            if sent == 0:
                break
            self._pending_size -= sent
            if sent == len(head):
                pending.popleft()
            else:
                pending[0] = memoryview(head)[sent:]
        drained = self._drained
        if drained and not drained.done() and self._pending_size <= WRITE_HIGH_WATER // 4:
            drained.set_result(None)
        if pending and not self._closed:
            return
        self._writing = False
        if not self._closed:
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
        """Send a close_notify and close once everything written has been sent."""
        if self._closed or self._closing:
            return
        self._closing = True
        with contextlib.suppress(ssl.SSLError):
            self._ssl.unwrap()
        self._send_records()
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
        """``ssl_object``, ``peername`` or ``sockname``, like a transport's."""
        if name == "ssl_object":
            return self._ssl
        with contextlib.suppress(OSError):
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        return None
