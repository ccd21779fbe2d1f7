"""How long the media server waits on a client, and the per-connection watchdog that enforces it.

aiohttp bounds neither the time a request head may take to arrive nor a
stalled response, and keeps an idle connection for an hour by default: a
client that opens TLS connections and sends nothing (or one header byte at a
time) would hold them. :class:`TimedConnection` wraps each connection's
aiohttp protocol and closes it when the head of a request, the TLS handshake
or a response the client stopped reading takes too long; the body timeout is
applied by the upload handler, which is where the body is read.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import BaseModel, ConfigDict, PositiveFloat

from noisewall.messenger.mediarefusals import Handler

log = logging.getLogger(__name__)


class MediaTimeouts(BaseModel):
    """The media server's limits on slow or silent clients, in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    header: PositiveFloat = 10.0
    """From a request's first byte to the end of its head (request line and headers); also
    the longest TLS handshake."""
    body: PositiveFloat = 30.0
    """The longest pause between two reads of an upload's body."""
    idle: PositiveFloat = 60.0
    """The longest a connection may go without a request: after it opens or after its last
    response. Also how long a response the client stopped reading may stall."""


class TimedConnection(asyncio.Protocol):
    """One connection's aiohttp protocol behind header and stalled-write deadlines.

    The server calls :meth:`head_complete` when a request's handler starts
    and :meth:`request_handled` when it returns; bytes that arrive between
    requests start the header deadline.
    """

    def __init__(self, inner: asyncio.Protocol, timeouts: MediaTimeouts) -> None:
        self.inner = inner
        self._timeouts = timeouts
        self._transport: asyncio.Transport | None = None
        self._in_request = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._in_request and self._head_deadline is None:
            self._head_deadline = self._close_later(self._timeouts.header, "request head")
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        # The client is not reading what we send.
        if self._write_deadline is None:
            self._write_deadline = self._close_later(self._timeouts.idle, "stalled response")
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self._stop_write_deadline()
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        self._stop_write_deadline()
        self._transport = None
        self.inner.connection_lost(exc)

    def head_complete(self) -> None:
        """A request's head has arrived and its handler runs."""
        self._in_request = True
        self._stop_head_deadline()

    def request_handled(self) -> None:
        """The handler returned: bytes from now on belong to the next request."""
        self._in_request = False

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _stop_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _close_later(self, delay: float, what: str) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(delay, self._expire, what, delay)

    def _expire(self, what: str, delay: float) -> None:
        if self._transport is not None:
            log.info("media connection closed: %s took longer than %g s", what, delay)
            self._transport.abort()


@web.middleware
async def timed_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's watchdog when a request's head has arrived and when it is handled."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, TimedConnection):
        return await handler(request)
    connection.head_complete()
    try:
        return await handler(request)
    finally:
        connection.request_handled()
