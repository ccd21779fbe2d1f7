"""cancel_and_wait: a helper task stopped, the waiting task's own cancellation kept."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from noisewall.cancellation import cancel_and_wait


async def _slow_to_stop() -> None:
    """A task that takes a moment to stop once cancelled (as a connection's reader does)."""
    try:
        await asyncio.sleep(60)
    finally:
        await asyncio.sleep(0.2)


async def _old_close(helper: asyncio.Task[None]) -> None:
    helper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await helper


async def _close_then_go_on(close: object, helper: asyncio.Task[None]) -> str:
    assert callable(close)
    await close(helper)
    return "went on"


@pytest.mark.parametrize("close", [cancel_and_wait, _old_close])
async def test_a_cancel_that_lands_while_waiting_is_passed_on(close: object) -> None:
    helper = asyncio.create_task(_slow_to_stop())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_close_then_go_on(close, helper))
    await asyncio.sleep(0.05)  # the waiter now waits for the helper to stop
    waiter.cancel()  # what asyncio.run does on Ctrl-C
    if close is _old_close:  # the hole this helper closes: the Ctrl-C is lost
        assert await waiter == "went on"
    else:
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert helper.cancelled()


async def test_cleanup_in_a_finally_during_a_cancellation_runs_to_the_end() -> None:
    helper = asyncio.create_task(_slow_to_stop())
    steps: list[str] = []

    async def main() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await cancel_and_wait(helper)
            steps.append("after the helper")

    task = asyncio.create_task(main())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["after the helper"] and helper.cancelled()


async def test_the_helpers_own_errors_are_raised_unless_ignored() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ValueError("while stopping") from None

    with pytest.raises(ValueError, match="while stopping"):
        first = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_and_wait(first)
    second = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(second, ignore=(ValueError,))
    assert second.done()
