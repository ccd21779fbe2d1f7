"""A process that holds a temporary lab network until it is signalled (for teardown tests).

``python -m tests.net.holder NAME sync|async``: prints ``up`` once the
network is up, then waits (at most two minutes).
"""

from __future__ import annotations

import asyncio
import sys
import time

from noisewall.net import temporary_network, temporary_network_async

HOLD_SECONDS = 120
HOSTS = {"chat.lab": None}


async def _hold_async(name: str) -> None:
    async with temporary_network_async(name, HOSTS):
        print("up", flush=True)
        await asyncio.sleep(HOLD_SECONDS)


def main() -> None:
    """Hold network ``argv[1]`` with the ``argv[2]`` context manager."""
    name, mode = sys.argv[1], sys.argv[2]
    if mode == "async":
        asyncio.run(_hold_async(name))
        return
    with temporary_network(name, HOSTS):
        print("up", flush=True)
        time.sleep(HOLD_SECONDS)


if __name__ == "__main__":
    main()
