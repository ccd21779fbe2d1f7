"""A TCP endpoint: host and port."""

from __future__ import annotations

from typing import NamedTuple


class Endpoint(NamedTuple):
    """An IP address (or host name) and port.

    A named tuple, so ``host, port = endpoint`` and the ``(host, port)`` pairs
    asyncio returns both work, and pydantic validates it from a pair.
    """

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
