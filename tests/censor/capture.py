"""Loopback helpers for censor tests: record first bytes, check an echo gets through, RSS."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine

#: A client under test: an async function that connects to ``(host, port)`` and talks.
Client = Callable[[str, int], Coroutine[object, object, object]]


async def first_bytes(client: Client, settle: float = 0.3, limit: int = 16384) -> bytes:
    """Run ``client(host, port)`` against a server that records what arrives, then closes.

    The server reads until ``settle`` seconds pass without new bytes (or
    ``limit`` bytes), so a message split over several segments is whole.
    """
    received = bytearray()
    done = asyncio.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while len(received) < limit:
                try:
                    async with asyncio.timeout(settle):
                        data = await reader.read(limit)
                except TimeoutError:
                    break
                if not data:
                    break
                received.extend(data)
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        task = asyncio.create_task(client("127.0.0.1", port))
        async with asyncio.timeout(10):
            await done.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return bytes(received)


def in_thread(function: Callable[[str, int], object]) -> Client:
    """Adapt a blocking client (sockets, third-party libraries) to :func:`first_bytes`."""

    async def run(host: str, port: int) -> object:
        result: list[object] = []

        def target() -> None:
            try:
                result.append(function(host, port))
            except Exception as exc:  # the recorder hangs up mid-handshake by design
                result.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.01)
        return result[0] if result else None

    return run


HTTP_REQUEST = b"GET /file HTTP/1.1\r\nHost: media.example\r\n\r\n"


async def http_echo_works(host: str, port: int, timeout: float = 5) -> bool:
    """Send an HTTP request through ``host:port`` to an echo server; True if it comes back."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(HTTP_REQUEST)
        return await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), timeout) == (
            HTTP_REQUEST
        )
    except (ConnectionResetError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
