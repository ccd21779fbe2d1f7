"""Where the lab's parts run: all on one loop (loopback), or each side in its namespace (--net).

On loopback every part shares the caller's event loop. In a lab network the
servers run on a loop in the outside namespace, the censor on one in the
border and the probes and tunnel clients on one inside
(:class:`~noisewall.net.loops.NamespaceLoop`), so every socket a part makes is
where that part lives. The runner talks to a part only through
:meth:`LabSides.run` (and :meth:`LabSides.enter` for parts with a lifetime),
which is a plain ``await`` on loopback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from noisewall.net import Network, Side
from noisewall.net.loops import NamespaceLoop

T = TypeVar("T")


class LabSides:
    """The loops of the lab's three sides; ``network=None`` is loopback (one loop)."""

    def __init__(self, network: Network | None) -> None:
        self.network = network
        self._loops: dict[Side, NamespaceLoop] = {}

    @property
    def in_network(self) -> bool:
        """Whether the parts run in a lab network's namespaces."""
        return self.network is not None

    def __enter__(self) -> LabSides:
        if self.network is not None:
            try:
                for side in Side:
                    loop = NamespaceLoop(self.network.namespace(side), side.value)
                    loop.start()
                    self._loops[side] = loop
            except BaseException:
                self._stop()
                raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        for loop in reversed(list(self._loops.values())):
            loop.stop()
        self._loops.clear()

    async def run(self, side: Side, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` where ``side`` runs."""
        if not self._loops:
            return await coro
        return await self._loops[side].run(coro)

    async def call(self, side: Side, function: Callable[[], T]) -> T:
        """Call a plain function on ``side``'s thread (for state that loop owns)."""
        if not self._loops:
            return function()

        async def call() -> T:
            return function()

        return await self._loops[side].run(call())

    async def enter(self, stack: contextlib.AsyncExitStack, side: Side,
                    part: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Enter ``part`` on ``side``; it is exited there when ``stack`` closes."""
        value = await self.run(side, part.__aenter__())

        async def leave() -> None:
            await self.run(side, part.__aexit__(None, None, None))

        stack.push_async_callback(leave)
        return value
