"""Stopping asyncio tasks without losing the caller's own cancellation.

``task.cancel()`` then ``with suppress(CancelledError): await task`` is the usual way
to stop a helper task, and it has a hole: a cancellation of the *waiting* task that lands
while it waits (a Ctrl-C, which ``asyncio.run`` turns into cancelling the main task)
arrives as the same exception and is swallowed with the helper's, so the program goes on
as if nobody had asked it to stop. :func:`cancel_and_wait` tells the two apart by the
waiting task's count of cancellation requests (``Task.cancelling()``).
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any],
                          ignore: tuple[type[BaseException], ...] = ()) -> None:
    """Cancel ``tasks`` and wait until every one has stopped.

    Their own cancellation ends here, and so does any exception of a type in
    ``ignore``; any other exception of theirs is raised. A cancellation of the task
    that waits, requested while it waits, is passed on. Safe in a ``finally`` that runs
    because the waiting task is being cancelled: the request it is handling is not new.
    """
    current = asyncio.current_task()
    requested = current.cancelling() if current is not None else 0
    for task in tasks:
        task.cancel()
    try:
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > requested:
            raise
        return
    for outcome in outcomes:
        if (isinstance(outcome, BaseException)
                and not isinstance(outcome, (asyncio.CancelledError, *ignore))):
            raise outcome
