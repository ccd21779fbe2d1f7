"""A listening server that also owns the tasks serving its connections.

``asyncio.Server.close`` alone leaves accepted connections running; a
:class:`ConnectionServer` cancels them and waits for them on :meth:`close`.
The Noise listener and the tunnel's listeners both build on it.
"""

from __future__ import annotations

import asyncio


class ConnectionServer:
    """An :class:`asyncio.Server` (set by the subclass) and one task per live connection."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """How many connections are being served right now."""
        return len(self._tasks)

    def _track(self, task: asyncio.Task[None]) -> None:
        """Serve a connection in ``task``: cancelled on :meth:`close`, forgotten when done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _listening(self) -> asyncio.Server:
        assert self._server is not None, "start it first"
        return self._server

    async def close(self) -> None:
        """Stop listening and end every connection's task."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def serve_forever(self) -> None:
        """Serve until cancelled."""
        await self._listening().serve_forever()
