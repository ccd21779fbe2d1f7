"""Joining a tunnel stream and a local TCP connection, with as few copies as Python allows.

The local connection (the application's SOCKS5 connection at the client,
the onward connection at the server) is taken from asyncio
(:meth:`TcpStream.detach`) and its socket is read and written here:

* towards the tunnel, one ``recvmsg_into`` scatters what arrived into the
  payload room of up to four DATA frames in one buffer, the headers are
  packed in place, and the frames go to the channel in one write (one TLS
  encryption, one ``send``): no copy out of a receive buffer and none into
  a mux outbox;
* from the tunnel, the DATA payloads (views into the decrypted buffer) go to
  the socket in one ``sendmsg``: no join.

What it saves against the plain ``TcpStream`` copy loop is measured in
docs/BENCHMARKS.md (Tunnel).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Coroutine
from typing import Any

from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.mux import HEADER, MAX_DATA
from noisewall.tunnel.session import TunnelStream

#: DATA frames gathered into one channel write at most.
FRAMES_PER_WRITE = 4


async def _ready(sock: socket.socket, writable: bool) -> None:
    """Wait until ``sock`` can be read (or written)."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def _outward(stream: TunnelStream, sock: socket.socket, pending: bytes,
                   eof: bool) -> None:
    """Socket to tunnel: scatter reads into framed room, send whole frames, EOF at the end."""
    if pending:
        await stream.write(pending)
    session = stream.session
    frame = HEADER.size + MAX_DATA
    view = memoryview(bytearray(FRAMES_PER_WRITE * frame))
    while not eof:
        credit = await stream.credit()
        # One read fills the payload room of up to four frames, leaving their headers' room.
        slots = []
        for start in range(HEADER.size, len(view), frame):
            if credit <= 0:
                break
            room = min(MAX_DATA, credit)
            slots.append(view[start : start + room])
            credit -= room
        try:
            received = sock.recvmsg_into(slots)[0]
        except (BlockingIOError, InterruptedError):
            await _ready(sock, writable=False)
            continue
        if received == 0:
            break
        # Full frames are contiguous, so the frames filled end where the read ended.
        end = 0
        for slot in slots:
            size = min(received, len(slot))
            session.mux.frame_data(stream.id, view[end : end + HEADER.size], size)
            end += HEADER.size + size
            received -= size
            if not received:
                break
        await session.write_frames(view[:end])
    await stream.write_eof()


async def _inward(stream: TunnelStream, sock: socket.socket) -> None:
    """Tunnel to socket: every payload that arrived in one ``sendmsg``, half-close at the end."""
    while chunks := await stream.read_chunks():
        views = deque(memoryview(chunk) for chunk in chunks)
        while views:
            try:
                sent = sock.sendmsg(views)
            except (BlockingIOError, InterruptedError):
                await _ready(sock, writable=True)
                continue
            while sent:
                head = views[0]
                if sent < len(head):
                    views[0] = head[sent:]
                    break
                sent -= len(head)
                views.popleft()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


async def splice(stream: TunnelStream, connection: TcpStream) -> None:
    """Copy both ways between a tunnel stream and a local TCP connection until both end.

    A failure either way resets the tunnel stream; the connection is closed
    at the end in every case.
    """
    try:
        sock, pending, eof = await connection.detach()
    except (ConnectionError, OSError):
        stream.reset()
        connection.close()
        raise
    coroutines: list[Coroutine[Any, Any, None]] = [_outward(stream, sock, pending, eof),
                                                   _inward(stream, sock)]
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if any(t.exception() is not None for t in done):
            stream.reset()
    except asyncio.CancelledError:
        stream.reset()
        raise
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stream.session.forget(stream.id)
        sock.close()
