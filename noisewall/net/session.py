"""A lab network for the length of a ``with`` block: up on entry, down on any exit.

For tests and for ``noisewall lab --net``: the network goes down on normal
exit, on an exception, on Ctrl-C (KeyboardInterrupt) and on SIGTERM, which is
turned into the same unwinding; a second signal during teardown waits for it.
SIGKILL leaves it up: ``noisewall net down --all`` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from types import FrameType

from noisewall.net import lifecycle
from noisewall.net.lifecycle import HostAddress
from noisewall.net.topology import Network


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM while a temporary network is up."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextmanager
def temporary_network(name: str,
                      hosts: Mapping[str, HostAddress] | None = None) -> Iterator[Network]:
    """Network ``name`` up for the block, down afterwards, SIGTERM included."""
    with _sigterm_raises():
        network = lifecycle.up(name, hosts)
        try:
            yield network
        finally:
            with _signals_deferred():
                lifecycle.down(name)


@asynccontextmanager
async def temporary_network_async(
        name: str, hosts: Mapping[str, HostAddress] | None = None) -> AsyncIterator[Network]:
    """As :func:`temporary_network`, for asyncio code: SIGTERM cancels the entering task.

    Up and down run in a worker thread so that the event loop keeps serving.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    handled = task is not None and threading.current_thread() is threading.main_thread()
    if handled:
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        network = await _up_uncancelled(name, hosts)
        try:
            yield network
        finally:
            await asyncio.shield(asyncio.to_thread(lifecycle.down, name))
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)


async def _up_uncancelled(name: str, hosts: Mapping[str, HostAddress] | None) -> Network:
    """``lifecycle.up`` in a thread; if cancelled meanwhile, the network comes down again.

    The thread cannot be stopped half way: it is awaited to its end, then
    what it made is removed (``up`` removes a half-made network itself, and
    makes nothing when the name is taken, which must then stay untouched).
    """
    upping = asyncio.ensure_future(asyncio.to_thread(lifecycle.up, name, hosts))
    try:
        return await asyncio.shield(upping)
    except asyncio.CancelledError:
        while not upping.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([upping])
        if not upping.cancelled() and upping.exception() is None:
            await asyncio.to_thread(lifecycle.down, name)
        raise


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so a second one cannot cut teardown short.

    Only the main thread gets them; elsewhere there is nothing to hold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(_signum: int, _frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
