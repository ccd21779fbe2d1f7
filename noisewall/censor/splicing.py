"""Relaying an allowed flow inside the kernel, with ``splice(2)`` through a pipe.

Once the censor has let a flow through it has nothing left to look at, and
copying every byte through Python (read into a buffer, write it out again)
is pure cost: a real GFW is a passive tap and never slows the traffic it
lets through. ``splice`` moves bytes from one socket into a pipe and from
the pipe into the other socket by passing page references, so the relay
costs system calls, not copies. Linux only (``os.splice``); elsewhere the
middlebox keeps its copying relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

#: Is ``splice(2)`` available here?
AVAILABLE = hasattr(os, "splice")
#: Bytes one pipe holds (and one ``splice`` call moves at most): the Linux default
#: maximum for unprivileged processes.
PIPE_SIZE = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class PipePool:
    """The pipes that splice transfers go through, lent out per transfer.

    A flow holds a pipe only while bytes sit in it, so thousands of idle
    allowed flows cost no descriptors beyond their two sockets. A pipe comes
    back empty; one abandoned with bytes inside (an error, a cancellation) is
    closed instead.
    """

    def __init__(self, keep: int = 64) -> None:
        self._keep = keep
        self._idle: list[tuple[int, int]] = []

    def take(self) -> tuple[int, int]:
        """An empty pipe as ``(read_end, write_end)``, both non-blocking."""
        if self._idle:
            return self._idle.pop()
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only means more calls
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return read_end, write_end

    def give_back(self, pipe: tuple[int, int]) -> None:
        """Return an empty pipe (kept for the next transfer, or closed if enough are idle)."""
        if len(self._idle) < self._keep:
            self._idle.append(pipe)
        else:
            _close_pipe(pipe)

    def close(self) -> None:
        """Close the idle pipes."""
        while self._idle:
            _close_pipe(self._idle.pop())


def _close_pipe(pipe: tuple[int, int]) -> None:
    for fd in pipe:
        os.close(fd)


@dataclass
class SpliceEnd:
    """One side of a flow handed over to the kernel relay."""

    sock: socket.socket
    #: Bytes that arrived from this side before the hand-over and still go to the other.
    pending: bytes = b""
    #: This side had already half-closed before the hand-over.
    ended: bool = False


async def splice_relay(client: SpliceEnd, server: SpliceEnd, pipes: PipePool,
                       moved: Callable[[bool, int], None]) -> None:
    """Relay both ways until both directions have ended.

    ``moved(upstream, size)`` is called as bytes go through (upstream is
    client to server). Each direction ends with a half-close of its target,
    as the copying relay does. An error on either side (a reset) ends both
    directions and is raised. The sockets stay open: the caller closes them.
    """
    loop = asyncio.get_running_loop()
    directions = {
        loop.create_task(_one_way(client, server.sock, pipes, lambda size: moved(True, size))),
        loop.create_task(_one_way(server, client.sock, pipes, lambda size: moved(False, size))),
    }
    try:
        done, _ = await asyncio.wait(directions, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in directions:
            task.cancel()
        await asyncio.wait(directions)


async def _one_way(source: SpliceEnd, target: socket.socket, pipes: PipePool,
                   moved: Callable[[int], None]) -> None:
    if source.pending:
        await asyncio.get_running_loop().sock_sendall(target, source.pending)
        moved(len(source.pending))
    if not source.ended:
        await _splice_until_eof(source.sock, target, pipes, moved)
    with contextlib.suppress(OSError):  # the peer may be gone already
        target.shutdown(socket.SHUT_WR)


async def _splice_until_eof(source: socket.socket, target: socket.socket, pipes: PipePool,
                            moved: Callable[[int], None]) -> None:
    while True:
        pipe = pipes.take()
        read_end, write_end = pipe
        try:
            size = os.splice(source.fileno(), write_end, PIPE_SIZE, flags=_FLAGS)
        except BlockingIOError:
            pipes.give_back(pipe)
            await _ready(source, readable=True)
            continue
        except BaseException:
            pipes.give_back(pipe)
            raise
        if size == 0:
            pipes.give_back(pipe)
            return
        left = size
        try:
            while left:
                try:
                    left -= os.splice(read_end, target.fileno(), left, flags=_FLAGS)
                except BlockingIOError:
                    await _ready(target, readable=False)
        except BaseException:
            _close_pipe(pipe)  # bytes are stuck in it
            raise
        pipes.give_back(pipe)
        moved(size)


async def _ready(sock: socket.socket, *, readable: bool) -> None:
    """Wait until ``sock`` is readable (or writable)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not future.done():
            future.set_result(None)

    fd = sock.fileno()
    if readable:
        loop.add_reader(fd, wake)
    else:
        loop.add_writer(fd, wake)
    try:
        await future
    finally:
        if readable:
            loop.remove_reader(fd)
        else:
            loop.remove_writer(fd)
