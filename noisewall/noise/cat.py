"""``noisewall noise cat``: netcat over NoiseSocket or WA framing."""

from __future__ import annotations

import asyncio
import hmac
import io
import sys
import threading
from dataclasses import dataclass

from noisewall.cancellation import cancel_and_wait
from noisewall.noise.errors import HandshakeStateError
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.stream import Framing, NoiseServer, NoiseStream, connect
from noisewall.records.endpoint import Endpoint


@dataclass
class CatOptions:
    """What ``noise cat`` was asked to do."""

    host: str
    port: int
    listen: bool
    settings: NoiseSettings
    framing: Framing
    echo: bool
    expected_remote: bytes | None
    timeout: float


def check_remote_key(stream: NoiseStream, expected: bytes | None) -> None:
    """Refuse a peer whose proven static key is not the one the user named."""
    if expected is None:
        return
    actual = stream.remote_static
    if actual is None or not hmac.compare_digest(actual, expected):
        raise HandshakeStateError("the peer's static key is not the expected --remote-key")


def _read_stdin(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes], chunk: int) -> None:
    # A daemon thread: works for pipes, files and terminals alike, and never
    # holds the process open once the session is over.
    stdin = sys.stdin.buffer
    assert isinstance(stdin, io.BufferedReader)  # read1: return what is there, not chunk bytes
    while True:
        data = stdin.read1(chunk)
        loop.call_soon_threadsafe(queue.put_nowait, data)
        if not data:
            return


async def _stdin_to_stream(stream: NoiseStream, chunk: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_read_stdin, args=(loop, queue, chunk), daemon=True).start()
    while data := await queue.get():
        await stream.send(data)
    await stream.write_eof()


async def _stream_to_stdout(stream: NoiseStream) -> None:
    out = sys.stdout.buffer
    async for message in stream:
        out.write(message)
        out.flush()


async def pipe(stream: NoiseStream) -> None:
    """Copy stdin to the peer and the peer's messages to stdout until the peer closes."""
    sender = asyncio.create_task(_stdin_to_stream(stream, stream.max_message_size))
    try:
        await _stream_to_stdout(stream)
    finally:
        await cancel_and_wait(sender)


async def echo(stream: NoiseStream) -> None:
    """Send every message back until the peer closes."""
    async for message in stream:
        await stream.send(message)


def report_close(peer: object, reason: str) -> None:
    """The listener's one line on stderr per ended connection."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        peer = f"{peer[0]}:{peer[1]}"
    print(f"connection from {peer} closed: {reason}", file=sys.stderr, flush=True)


async def run_cat(options: CatOptions) -> None:
    """Run ``noise cat`` until the session (or, with --echo, the process) ends."""
    if not options.listen:
        stream = await connect(
            options.host, options.port, options.settings,
            framing=options.framing, timeout=options.timeout,
        )
        async with stream:
            check_remote_key(stream, options.expected_remote)
            await pipe(stream)
        return
    done = asyncio.Event()

    async def handle(stream: NoiseStream) -> None:
        check_remote_key(stream, options.expected_remote)
        if options.echo:
            await echo(stream)
            return
        try:
            await pipe(stream)
        finally:
            done.set()

    server = NoiseServer(
        handle, Endpoint(options.host, options.port), options.settings,
        framing=options.framing, handshake_timeout=options.timeout, on_close=report_close,
    )
    async with server:
        print(f"listening on {options.host}:{server.address.port}", file=sys.stderr, flush=True)
        if options.echo:
            await server.serve_forever()
        else:
            await done.wait()
