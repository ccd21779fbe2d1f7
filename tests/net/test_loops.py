"""Event loops in namespaces: each loop's sockets live where its thread is."""

from __future__ import annotations

import asyncio
import os

import pytest

from noisewall.net import NetError, Network, Side
from noisewall.net.loops import NamespaceLoop


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


async def _echo_server(host: str) -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, host, 0)
    return server, server.sockets[0].getsockname()[1]


async def _ask(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"ping")
    answer = await reader.read(100)
    writer.close()
    return answer


async def test_loops_serve_and_connect_across_the_border(lab_network: Network) -> None:
    server_host = str(lab_network.server_addresses[0])
    with NamespaceLoop(lab_network.namespace(Side.OUTSIDE), "outside") as outside, \
            NamespaceLoop(lab_network.namespace(Side.INSIDE), "inside") as inside:
        assert await inside.run(_inode()) == os.stat(
            f"/run/netns/{lab_network.namespace(Side.INSIDE)}").st_ino
        server, port = await outside.run(_echo_server(server_host))
        assert await inside.run(_ask(server_host, port)) == b"ping"
        outside.call(server.close).result(5)


async def _inode() -> int:
    return _netns_inode()


async def test_cancelling_the_caller_cancels_the_coroutine_there(lab_network: Network) -> None:
    cancelled = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def wait_forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            loop.call_soon_threadsafe(cancelled.set)
            raise

    with NamespaceLoop(lab_network.namespace(Side.BORDER), "border") as border:
        task = asyncio.create_task(border.run(wait_forever()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(cancelled.wait(), 5)


def test_stop_cancels_what_still_runs() -> None:
    ended = []

    async def linger() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            ended.append(True)

    with NamespaceLoop(None, "here") as here:
        here.loop.call_soon_threadsafe(lambda: here.loop.create_task(linger()))
        assert here.run_sync(asyncio.sleep(0.05, "ok"), 5) == "ok"
    assert ended == [True]


def test_a_namespace_that_does_not_exist_is_a_clear_error() -> None:
    with pytest.raises(NetError, match="does not exist"):
        NamespaceLoop("noisewall-nonexistent-inside", "inside").start()
