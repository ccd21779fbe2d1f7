"""A real asyncio server on its own loop in a thread, so hypothesis drives it from plain tests.

Hypothesis runs each example synchronously; the server under test keeps
running between examples (as a real one would between clients) and a test
talks to it over real sockets on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: The longest one call into the loop may take before the test fails.
CALL_TIMEOUT = 30.0


class BackgroundLoop:
    """An event loop running in a daemon thread; :meth:`run` calls a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """The coroutine's result, run on the background loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @contextmanager
    def running(self) -> Iterator[BackgroundLoop]:
        """Start the thread; stop the loop and join the thread afterwards."""
        self._thread.start()
        try:
            yield self
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(CALL_TIMEOUT)
            self.loop.close()


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, or carrying a traceback, from the loggers it watches."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    @contextmanager
    def watching(self, *names: str) -> Iterator[ErrorRecords]:
        """Attach to the named loggers (and the asyncio one) for the block."""
        loggers = [logging.getLogger(name) for name in (*names, "asyncio")]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeHandler(self)

    def take(self) -> list[str]:
        """What went wrong since the last call, one line a record."""
        taken, self.records = self.records, []
        return [f"{record.name}: {record.getMessage()} {record.exc_info!r}" for record in taken]
