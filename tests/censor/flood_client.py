"""A child process that opens many TCP connections at once and holds them.

``python -m tests.censor.flood_client HOST PORT COUNT HOLD_SECONDS``: connects
COUNT times (some send garbage, some a real first message, some nothing),
prints ``open N`` once all attempts are done, holds them HOLD_SECONDS, exits.
"""

from __future__ import annotations

import asyncio
import os
import sys


async def main(host: str, port: int, count: int, hold: float) -> None:
    writers: list[asyncio.StreamWriter] = []
    semaphore = asyncio.Semaphore(500)

    async def one(index: int) -> None:
        async with semaphore:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                return
            if index % 3 == 0:
                writer.write(os.urandom(200))
            elif index % 3 == 1:
                writer.write(b"GET / HTTP/1.1\r\nHost: flood.example\r\n\r\n")
            writers.append(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    print(f"open {len(writers)}", flush=True)
    await asyncio.sleep(hold)
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    host, port, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(main(host, port, count, hold))
