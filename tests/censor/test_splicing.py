"""The kernel relay (``splice``) on real loopback TCP connections."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import hashlib
import os
import socket
import struct
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from noisewall.censor import splicing
from noisewall.censor.splicing import PipePool, SpliceEnd, splice_relay

pytestmark = pytest.mark.skipif(not splicing.AVAILABLE, reason="splice(2) is Linux only")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _connected_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of one loopback TCP connection, non-blocking."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        outer = socket.socket()
        outer.setblocking(False)
        accepted = loop.sock_accept(listener)
        await loop.sock_connect(outer, listener.getsockname())
        inner, _ = await accepted
    inner.setblocking(False)
    return outer, inner


@dataclass
class Flow:
    """app <-> (client | relay | server) <-> backend, each ``|`` a loopback connection."""

    app: socket.socket
    client: socket.socket
    server: socket.socket
    backend: socket.socket

    def close(self) -> None:
        for sock in (self.app, self.client, self.server, self.backend):
            sock.close()


@pytest.fixture
async def flow() -> AsyncIterator[Flow]:
    app, client = await _connected_pair()
    server, backend = await _connected_pair()
    pair = Flow(app, client, server, backend)
    yield pair
    pair.close()


async def _send_then_half_close(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)
    sock.shutdown(socket.SHUT_WR)


async def _read_to_eof(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while chunk := await loop.sock_recv(sock, 1 << 20):
        received += chunk
    return bytes(received)


async def test_relays_both_ways_with_pending_bytes_and_half_close(flow: Flow) -> None:
    up = os.urandom(24 << 20)
    down = os.urandom(5 << 20)
    moved = {True: 0, False: 0}

    def count(upstream: bool, size: int) -> None:
        moved[upstream] += size

    pipes = PipePool()
    relay = asyncio.create_task(splice_relay(
        SpliceEnd(flow.client, pending=b"arrived early "),
        SpliceEnd(flow.server, pending=b"server hello "), pipes, count))
    async with asyncio.timeout(60):
        got_up, got_down, *_ = await asyncio.gather(
            _read_to_eof(flow.backend), _read_to_eof(flow.app),
            _send_then_half_close(flow.app, up), _send_then_half_close(flow.backend, down))
        await relay
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(b"arrived early " + up).digest()
    assert got_down == b"server hello " + down
    assert moved == {True: len(up) + 14, False: len(down) + 13}
    pipes.close()


async def test_a_side_that_had_already_ended_only_gets_its_pending_bytes(flow: Flow) -> None:
    pipes = PipePool()
    relay = asyncio.create_task(splice_relay(
        SpliceEnd(flow.client), SpliceEnd(flow.server, pending=b"last words", ended=True),
        pipes, lambda upstream, size: None))
    async with asyncio.timeout(10):
        assert await _read_to_eof(flow.app) == b"last words"  # then the relay half-closed it
        await _send_then_half_close(flow.app, b"still flowing upstream")
        assert await _read_to_eof(flow.backend) == b"still flowing upstream"
        await relay
    pipes.close()


async def test_a_reset_ends_both_directions_and_leaks_no_pipe(flow: Flow) -> None:
    pipes = PipePool(keep=0)
    before = _open_fds()
    relay = asyncio.create_task(splice_relay(SpliceEnd(flow.client), SpliceEnd(flow.server),
                                             pipes, lambda upstream, size: None))
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(flow.app, b"x" * 100_000)
    await loop.sock_recv(flow.backend, 1)
    flow.backend.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    flow.backend.close()  # a reset towards the relay
    with pytest.raises(OSError):
        async with asyncio.timeout(10):
            while True:  # the relay sees the reset on its next read or write
                await loop.sock_sendall(flow.app, b"y" * 65536)
                await asyncio.sleep(0.01)
                if relay.done():
                    await relay
    assert relay.done()
    assert _open_fds() == before - 1  # the backend socket; no pipe is left open
    flow.backend = socket.socket()  # already closed above; the fixture closes this one instead


async def test_cancelling_the_relay_closes_a_pipe_with_bytes_in_it(flow: Flow) -> None:
    # The backend never reads: bytes pile up in the relay's pipe, then the flow is evicted.
    flow.server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    flow.backend.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    pipes = PipePool()
    before = _open_fds()
    relay = asyncio.create_task(splice_relay(SpliceEnd(flow.client), SpliceEnd(flow.server),
                                             pipes, lambda upstream, size: None))
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            await loop.sock_sendall(flow.app, os.urandom(8 << 20))
    relay.cancel()
    await asyncio.wait({relay})
    assert relay.cancelled()
    read_end, _ = pipe = pipes.take()  # what the pool lends next holds no stale bytes
    unread = array.array("i", [0])
    fcntl.ioctl(read_end, termios.FIONREAD, unread)
    assert unread[0] == 0
    pipes.give_back(pipe)
    pipes.close()
    assert _open_fds() == before


async def test_idle_flows_hold_no_pipes() -> None:
    pipes = PipePool(keep=4)
    flows = [Flow(*await _connected_pair(), *await _connected_pair()) for _ in range(100)]
    before = _open_fds()
    relays = [asyncio.create_task(splice_relay(SpliceEnd(f.client), SpliceEnd(f.server), pipes,
                                               lambda upstream, size: None)) for f in flows]
    loop = asyncio.get_running_loop()
    try:
        for f in flows:  # one message through each, then all sit idle
            await loop.sock_sendall(f.app, b"ping")
            assert await loop.sock_recv(f.backend, 4) == b"ping"
        await asyncio.sleep(0.05)
        assert _open_fds() - before <= 2 * 4  # at most the pool's idle pipes
    finally:
        for relay in relays:
            relay.cancel()
        await asyncio.wait(relays)
        for f in flows:
            f.close()
        pipes.close()
