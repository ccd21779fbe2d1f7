"""``async with`` for the probes: :meth:`start` on entry (undone by :meth:`close` if it fails),
:meth:`close` on exit."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class Started(ABC):
    """A base for objects that start and close; subclasses define both coroutines."""

    @abstractmethod
    async def start(self) -> None:
        """Open connections, register accounts."""

    @abstractmethod
    async def close(self) -> None:
        """Release everything :meth:`start` took (also after a partial start)."""

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
