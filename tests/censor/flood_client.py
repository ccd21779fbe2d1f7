"""A child process that opens many TCP connections at once and holds them.

``python -m tests.censor.flood_client HOST PORT COUNT HOLD_SECONDS [push]``:
connects COUNT times, prints ``open N`` once all attempts are done, holds
them HOLD_SECONDS, exits. By default some send garbage, some a real first
message, some nothing; with ``push`` each sends an SSH banner and, once a
line arrives on stdin (the censor has decided on them all), writes as fast as
the censor lets it (a throttled flow pushing back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

SSH_BANNER = b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n"
_PUSH_BLOCK = bytes(64 * 1024)


async def _push(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            writer.write(_PUSH_BLOCK)
            await writer.drain()


async def main(host: str, port: int, count: int, hold: float, push: bool) -> None:
    writers: list[asyncio.StreamWriter] = []
    semaphore = asyncio.Semaphore(500)

    async def one(index: int) -> None:
        async with semaphore:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
            except (OSError, TimeoutError):
                return
            if push:
                writer.write(SSH_BANNER)
            elif index % 3 == 0:
                writer.write(os.urandom(200))
            elif index % 3 == 1:
                writer.write(b"GET / HTTP/1.1\r\nHost: flood.example\r\n\r\n")
            writers.append(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    print(f"open {len(writers)}", flush=True)
    pushers: list[asyncio.Task[None]] = []
    if push:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        pushers = [asyncio.get_running_loop().create_task(_push(w)) for w in writers]
    await asyncio.sleep(hold)
    for task in pushers:
        task.cancel()
    for writer in writers:
        writer.close()


if __name__ == "__main__":
    host, port, count, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(main(host, port, count, hold, sys.argv[5:] == ["push"]))
