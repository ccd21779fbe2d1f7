"""The asyncio shell around the mux: one reader task per session, streams as objects.

A :class:`MuxSession` owns one :class:`~noisewall.tunnel.channel.Channel` and one
:class:`MuxConnection`. Its reader task turns incoming bytes into mux
events and hands them to :class:`TunnelStream` objects; writers frame their
bytes and write them at once (so frames keep their order without a lock),
then wait on the channel's drain and on stream credit.
:func:`noisewall.tunnel.splice.splice` joins a tunnel stream and a local TCP
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from noisewall.noise.errors import NoiseError
from noisewall.tunnel.channel import Channel
from noisewall.tunnel.mux import (
    DEFAULT_WINDOW,
    CreditReceived,
    DataReceived,
    EndReceived,
    MuxConnection,
    MuxError,
    Opened,
    OpenRequested,
    Payload,
    PongReceived,
    Refused,
    ResetReceived,
)

log = logging.getLogger("noisewall.tunnel")


class StreamRefused(ConnectionError):
    """The server refused a stream; ``reply`` is the SOCKS5 reply code it gave."""

    def __init__(self, reply: int) -> None:
        super().__init__(f"the tunnel server refused the stream (SOCKS5 reply {reply})")
        self.reply = reply


class TunnelStream:
    """One multiplexed stream: ``read``/``write`` like a socket, with flow control."""

    def __init__(self, session: MuxSession, stream_id: int) -> None:
        self.session = session
        self.id = stream_id
        self._chunks: deque[Payload] = deque()
        self._readable = asyncio.Event()
        self._credit = asyncio.Event()
        self.eof = False
        self.reset_by_peer = False

    def _wake(self) -> None:
        self._readable.set()
        self._credit.set()

    async def read(self) -> Payload:
        """The next bytes from the peer; empty at its EOF; ConnectionResetError if reset."""
        chunks = await self.read_chunks()
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read_chunks(self) -> list[Payload]:
        """Every payload that has arrived (waiting for one); ``[]`` at the peer's EOF."""
        while not self._chunks:
            if self.reset_by_peer or self.session.closed:
                raise ConnectionResetError(f"tunnel stream {self.id} was reset")
            if self.eof:
                return []
            self._readable.clear()
            await self._readable.wait()
        # Everything queued at once: one large write onward instead of one per frame.
        chunks = list(self._chunks)
        self._chunks.clear()
        # Consumed as soon as handed on: the caller's own drain bounds what it buffers.
        self.session.mux.consumed(self.id, sum(len(chunk) for chunk in chunks))
        self.session.flush_soon()
        return chunks

    async def credit(self) -> int:
        """Bytes the peer lets us send now, waiting until it is more than zero."""
        while True:
            if self.reset_by_peer or self.session.closed:
                raise ConnectionResetError(f"tunnel stream {self.id} was reset")
            credit = self.session.mux.send_credit(self.id)
            if credit:
                return credit
            self._credit.clear()
            await self._credit.wait()

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting for credit and for the tunnel's write buffer."""
        view = memoryview(data)
        while view:
            if self.reset_by_peer or self.session.closed:
                raise ConnectionResetError(f"tunnel stream {self.id} was reset")
            self._credit.clear()
            taken = self.session.mux.send_data(self.id, view)
            view = view[taken:]
            await self.session.flush()
            if view and self.session.mux.send_credit(self.id) == 0:
                await self._credit.wait()

    async def write_eof(self) -> None:
        """Half-close our direction."""
        if not self.session.closed:
            self.session.mux.send_eof(self.id)
            await self.session.flush()

    def reset(self) -> None:
        """Abort the stream (both directions)."""
        if not self.session.closed:
            self.session.mux.reset(self.id)
            self.session.flush_soon()
        self.session.forget(self.id)


OpenHandler = Callable[["MuxSession", OpenRequested, TunnelStream], Coroutine[Any, Any, None]]


class MuxSession:
    """A running mux over one Noise channel (client or server side)."""

    def __init__(
        self,
        channel: Channel,
        client: bool,
        *,
        window: int = DEFAULT_WINDOW,
        on_open: OpenHandler | None = None,
    ) -> None:
        self.channel = channel
        self.mux = MuxConnection(client, window)
        self._on_open = on_open
        self._streams: dict[int, TunnelStream] = {}
        self._opening: dict[int, asyncio.Future[None]] = {}
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ping_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.closed = False

    # --- lifecycle -----------------------------------------------------

    def start(self) -> None:
        """Start the reader task."""
        self._reader = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Read and dispatch until the peer closes or breaks the protocol."""
        try:
            while True:
                data = await self.channel.receive()
                if not data:
                    return
                for event in self.mux.receive_data(data):
                    self._dispatch(event)
                await self.flush()
        except (MuxError, NoiseError) as exc:
            log.info("tunnel session closed: %s: %s", type(exc).__name__, exc)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._shut()

    def _shut(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self._streams.values():
            stream._wake()
        for future in [*self._opening.values(), *self._pings.values()]:
            if not future.done():
                future.set_exception(ConnectionResetError("the tunnel session closed"))
        self.channel.close()

    async def close(self) -> None:
        """Close the session, its streams and their tasks."""
        self._shut()
        tasks = [*self._tasks, *([self._reader] if self._reader else [])]
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not current), return_exceptions=True)

    # --- writing -------------------------------------------------------

    def _write_pending(self) -> bool:
        data = self.mux.data_to_send()
        if not data or self.closed:
            return False
        self.channel.write(data)
        return True

    async def flush(self) -> None:
        """Write what the mux has queued and wait for the channel to drain."""
        if self._write_pending():
            try:
                await self.channel.drain()
            except (ConnectionError, OSError):
                self._shut()
                raise ConnectionResetError("the tunnel connection was lost") from None

    async def write_frames(self, frames: memoryview) -> None:
        """Write mux frames the caller built in place (after what the mux has queued), then drain.

        The channel encrypts or copies ``frames`` before this returns, so the
        caller may reuse the buffer.
        """
        if self.closed:
            raise ConnectionResetError("the tunnel session is closed")
        self._write_pending()
        self.channel.write(frames)
        await self.flush()

    def flush_soon(self) -> None:
        """Write what the mux has queued without waiting (CREDIT, RESET)."""
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            self._write_pending()

    # --- streams -------------------------------------------------------

    @property
    def stream_count(self) -> int:
        """Streams this session tracks."""
        return len(self._streams)

    def forget(self, stream_id: int) -> None:
        """Drop a finished stream."""
        self._streams.pop(stream_id, None)

    async def open(self, host: str, port: int, timeout: float) -> TunnelStream:
        """(client) A new stream to ``host:port``; raises :class:`StreamRefused` if refused."""
        if self.closed:
            raise ConnectionResetError("the tunnel session is closed")
        stream_id = self.mux.open_stream(host, port)
        stream = self._streams[stream_id] = TunnelStream(self, stream_id)
        opened = self._opening[stream_id] = asyncio.get_running_loop().create_future()
        try:
            await self.flush()
            async with asyncio.timeout(timeout):
                await opened
        except BaseException:
            stream.reset()
            raise
        finally:
            self._opening.pop(stream_id, None)
        return stream

    async def ping(self, timeout: float) -> float:
        """Round-trip time of one PING through the whole tunnel, in seconds."""
        opaque = next(self._ping_ids)
        answered = self._pings[opaque] = asyncio.get_running_loop().create_future()
        start = time.perf_counter()
        try:
            self.mux.ping(opaque)
            await self.flush()
            async with asyncio.timeout(timeout):
                await answered
        finally:
            self._pings.pop(opaque, None)
        return time.perf_counter() - start

    def _dispatch(self, event: object) -> None:
        if isinstance(event, OpenRequested):
            stream = self._streams[event.stream] = TunnelStream(self, event.stream)
            if self._on_open is None:
                self.mux.refuse(event.stream, 0x07)  # command not supported
                self.forget(event.stream)
                return
            task = asyncio.get_running_loop().create_task(self._on_open(self, event, stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, Opened | Refused):
            future = self._opening.get(event.stream)
            if future is not None and not future.done():
                if isinstance(event, Opened):
                    future.set_result(None)
                else:
                    future.set_exception(StreamRefused(event.reply))
        elif isinstance(event, PongReceived):
            ping = self._pings.get(event.opaque)
            if ping is not None and not ping.done():
                ping.set_result(None)
        elif isinstance(event, DataReceived | EndReceived | ResetReceived | CreditReceived):
            target = self._streams.get(event.stream)
            if target is None:
                return
            if isinstance(event, DataReceived):
                target._chunks.append(event.data)
            elif isinstance(event, EndReceived):
                target.eof = True
            elif isinstance(event, ResetReceived):
                target.reset_by_peer = True
            target._wake()

