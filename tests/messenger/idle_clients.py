"""A child process holding many idle, authenticated chat connections.

``python -m tests.messenger.idle_clients PORT COUNT``: completes COUNT Noise
handshakes with the server (one static key, as a crowd of unregistered
clients), prints ``open N``, then holds them until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

from noisewall.messenger.pipes import client_settings
from noisewall.noise import dh_function
from noisewall.noise.stream import NoiseStream, connect


async def main(port: int, count: int) -> None:
    settings = client_settings(dh_function("25519").generate_keypair(), None)
    streams: list[NoiseStream] = []
    semaphore = asyncio.Semaphore(200)

    async def one() -> None:
        async with semaphore:
            streams.append(await connect("127.0.0.1", port, settings, timeout=30))

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    print(f"open {len(streams)} failed {len(failures)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for stream in streams:
        await stream.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
