"""One server process holds 10,000 idle authenticated connections in bounded memory."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from noisewall.bench.kit import rss
from tests.messenger.test_durability import ServerProcess

CONNECTIONS = 10_000
MAX_PER_CONNECTION = 50 * 1024


@pytest.mark.slow
async def test_ten_thousand_idle_connections(tmp_path: Path) -> None:
    # This crowd has no accounts: let all of it in, for longer than it takes to open.
    server = ServerProcess(tmp_path / "server", "--max-connections", str(CONNECTIONS + 100),
                           "--max-unregistered", str(CONNECTIONS), "--auth-timeout", "600")
    await server.start()
    assert server.process is not None
    crowd = None
    try:
        before = rss(server.process.pid)
        crowd = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.messenger.idle_clients", str(server.port),
            str(CONNECTIONS), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert crowd.stdout is not None
        line = (await asyncio.wait_for(crowd.stdout.readline(), 300)).decode()
        match = re.match(r"open (\d+) failed (\d+)", line)
        assert match, line
        opened, failed = int(match.group(1)), int(match.group(2))
        await asyncio.sleep(1)
        per_connection = (rss(server.process.pid) - before) / max(opened, 1)
        print(f"opened={opened} failed={failed} server_bytes_per_connection={per_connection:.0f}")
        assert (opened, failed) == (CONNECTIONS, 0)
        assert per_connection <= MAX_PER_CONNECTION
        assert server.process.returncode is None
    finally:
        if crowd is not None:
            assert crowd.stdin is not None
            crowd.stdin.close()
            try:
                await asyncio.wait_for(crowd.wait(), 60)
            except TimeoutError:
                crowd.kill()
                await crowd.wait()
        await server.stop()
