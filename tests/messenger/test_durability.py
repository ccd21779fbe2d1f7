"""kill -9 of the real server process during a stream of 1,000 messages."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
from pathlib import Path

import pytest

from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.noise import KeyPair, NoiseError, dh_function

DH = dh_function("25519")
MESSAGES = 1000


class ServerProcess:
    """``noisewall server`` as a child process on a fixed data folder (more ``options`` given)."""

    def __init__(self, data: Path, *options: str) -> None:
        self.data = data
        self.options = options
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noisewall", "server", "--data", str(self.data),
            "--listen", "127.0.0.1:0", "--media-listen", "127.0.0.1:0", *self.options,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stderr is not None
        line = (await asyncio.wait_for(self.process.stderr.readline(), 20)).decode()
        match = re.search(r"chat on 127\.0\.0\.1:(\d+)", line)
        assert match, line
        self.port = int(match.group(1))

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


async def _connect(server: ServerProcess, key: KeyPair) -> ChatConnection:
    return await ChatConnection.open("127.0.0.1", server.port, key, None, timeout=5)


@pytest.mark.slow
async def test_kill_9_loses_no_acked_message_and_duplicates_none(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    await server.start()
    alice_key, bob_key = DH.generate_keypair(), DH.generate_keypair()
    try:
        for name, key in (("alice", alice_key), ("bob", bob_key)):
            async with await _connect(server, key) as connection:
                await connection.request({"type": "register", "name": name})
        rng = random.Random(9)
        kill_points = sorted(rng.sample(range(50, MESSAGES - 50), 4))
        acked: set[str] = set()
        next_index = 0
        alice = await _connect(server, alice_key)
        kills = 0
        while next_index < MESSAGES:
            msg_id = f"m{next_index:04d}"
            killer = None
            if kills < len(kill_points) and next_index == kill_points[kills]:
                # Kill while this send is in flight: a random instant during the request.
                async def kill_soon() -> None:
                    await asyncio.sleep(rng.uniform(0, 0.004))
                    await server.kill()

                killer = asyncio.create_task(kill_soon())
                kills += 1
            try:
                reply = await alice.request({"type": "send", "to": "bob", "msg_id": msg_id,
                                             "envelope": {"n": next_index}}, timeout=5)
                assert reply["type"] == "ack"
                acked.add(msg_id)
                next_index += 1
            except (ChatError, NoiseError, ConnectionError, OSError, TimeoutError):
                pass  # not acked: the outbox resends the same msg_id after reconnecting
            if killer is not None:
                await killer
                await alice.close()
                await server.start()
                alice = await _connect(server, alice_key)
        await alice.close()
        assert kills == len(kill_points)
        assert len(acked) == MESSAGES

        bob = await _connect(server, bob_key)
        received: list[str] = []
        while len(received) < MESSAGES:
            push = await asyncio.wait_for(bob.pushes.get(), 10)
            received.append(push["msg_id"])
            await bob.notify({"type": "delivered", "queue_ids": [push["queue_id"]]})
        with_timeout_nothing_more = asyncio.wait_for(bob.pushes.get(), 0.5)
        try:
            extra = await with_timeout_nothing_more
        except TimeoutError:
            extra = None
        await bob.close()
    finally:
        await server.stop()
    assert extra is None, f"unexpected extra delivery {extra}"
    assert len(received) == len(set(received)), "a message was delivered twice"
    assert set(received) == acked, "an acknowledged message was lost"
