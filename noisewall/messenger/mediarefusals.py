"""The media server's one error path: a refused request gets its 4xx and one log line.

Handlers decode their input through functions that raise
:class:`MediaRequestError`; :func:`refusals` (an aiohttp middleware) answers
it. Requests that aiohttp's own HTTP parser refuses are answered 400 by
aiohttp; the filter on :data:`http_log` logs them in one line too, instead of
a traceback at ERROR.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("noisewall.messenger.mediaserver")

#: The logger to give aiohttp for the media server: requests its parser refuses land here.
http_log = logging.getLogger("noisewall.messenger.mediaserver.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class MediaRequestError(Exception):
    """A request the media server refuses: the status, a reason safe to log and to answer.

    ``close`` drops the connection after the answer (the rest of the body was not read).
    """

    def __init__(self, status: int, reason: str, *, close: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.close = close
        self.headers = headers or {}

    def response(self) -> web.Response:
        """The answer: ``{"error": reason}`` with this status."""
        response = web.json_response(
            {"error": self.reason}, status=self.status, headers=self.headers or None)
        if self.close:
            response.force_close()
        return response


class _OneLineParserRefusals(logging.Filter):
    """aiohttp logs each request its HTTP parser refuses (answered 400) with a traceback at
    ERROR; bad input from a client is worth one line, like every other refusal."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if isinstance(refused, HttpProcessingError):
            record.msg = "media request refused (%d): %s"
            record.args = (refused.code, refused.message.partition("\n")[0])
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


http_log.addFilter(_OneLineParserRefusals())


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one error path: a refused request gets its 4xx and one log line, no traceback."""
    try:
        return await handler(request)
    except MediaRequestError as refused:
        log.info("media request refused (%d): %s", refused.status, refused.reason)
        return refused.response()
