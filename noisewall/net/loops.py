"""An asyncio event loop on a thread of its own, inside one network namespace.

A network namespace belongs to a thread, and a socket to the namespace of the
thread that made it. So one process can hold the lab's servers (outside), its
censor (border) and its probes (inside) by giving each its own loop on its own
thread, entered into its namespace before the loop starts: every socket code
on that loop makes (``asyncio.open_connection``, aiohttp, a listener) is then
in the right namespace with no change to that code. Threads the loop starts
(its default executor) inherit the namespace.

:meth:`NamespaceLoop.run` runs a coroutine there from any other loop and
hands back its result; cancelling the caller cancels it there too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from noisewall.errors import NetError
from noisewall.net.enter import entered

T = TypeVar("T")
_STOP_TIMEOUT = 10.0


class NamespaceLoop:
    """A running event loop whose thread is in network namespace ``namespace``.

    ``namespace=None`` keeps the thread where the process is (for the same code
    on loopback). Use ``with``: on exit the loop's remaining tasks are
    cancelled and awaited, its executor shut down, and the thread joined.
    """

    def __init__(self, namespace: str | None, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (after :meth:`start`)."""
        if self._loop is None:
            raise RuntimeError(f"loop {self.name} is not running")
        return self._loop

    def start(self) -> None:
        """Start the thread; raises NetError if the namespace cannot be entered."""
        self._thread = threading.Thread(target=self._main, name=f"netns-{self.name}",
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            self._thread.join()
            raise NetError(f"{self.name}: {self._failure}") from self._failure

    def _main(self) -> None:
        try:
            with (entered(self.namespace) if self.namespace else contextlib.nullcontext()):
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._started.set()
                try:
                    loop.run_forever()
                    loop.run_until_complete(_cancel_all(loop))
                    loop.run_until_complete(loop.shutdown_asyncgens())
                    loop.run_until_complete(loop.shutdown_default_executor())
                finally:
                    loop.close()
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._failure = exc
            self._started.set()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this loop and return its result to the calling loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on this loop from a thread with no loop of its own, and wait."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Call a plain function on this loop's thread (for objects that loop owns)."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return future

    def stop(self) -> None:
        """Stop the loop (cancelling what still runs there) and join its thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT)
            if self._thread.is_alive():
                raise NetError(f"loop {self.name} did not stop within {_STOP_TIMEOUT:.0f} s")
        self._loop = None

    def __enter__(self) -> NamespaceLoop:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


async def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
