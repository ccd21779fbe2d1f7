"""One lifecycle for every service that listens, and one way to run one until interrupted.

``async with SomeService(config) as service`` listens on the configured
address; ``service.address`` is the bound :class:`Endpoint` (port 0 picks a
free one); leaving the block stops listening, ends the live connections and
waits for them. As in h11 or aioquic, the protocol work lives elsewhere and
this shell stays thin: a service only says how it starts and how it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

from noisewall.records.endpoint import Endpoint

T = TypeVar("T")

#: The exit status of a run ended by Ctrl-C (128 + SIGINT), as a shell reports it.
INTERRUPTED = 128 + signal.SIGINT
#: The exit status of a run ended by SIGTERM (128 + SIGTERM).
TERMINATED = 128 + signal.SIGTERM


class Service(ABC):
    """A listening service: started by entering ``async with``, closed by leaving it."""

    @property
    @abstractmethod
    def address(self) -> Endpoint:
        """Where it listens (once started)."""

    @abstractmethod
    async def start(self) -> Self:
        """Listen on the configured address; on failure nothing is left open."""

    @abstractmethod
    async def close(self) -> None:
        """Stop listening, end every live connection and wait for them (safe to repeat)."""

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def serve_forever(self) -> None:
        """Serve until cancelled; leaving the ``async with`` block then closes the service."""
        await asyncio.get_running_loop().create_future()


def run_until_interrupted(
    main: Coroutine[Any, Any, T],
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run ``main`` to its end (its result), or until Ctrl-C or SIGTERM.

    Both signals cancel ``main``, so its ``async with`` blocks close in order
    (connections ended, firewall rules removed); then the process exits with
    :data:`INTERRUPTED` (130) after Ctrl-C, :data:`TERMINATED` (143) after
    SIGTERM, as a shell reports them.
    """
    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        # Not every loop or thread can take signal handlers; SIGTERM then keeps its default.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(guarded())
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except asyncio.CancelledError:
        sys.exit(TERMINATED)
