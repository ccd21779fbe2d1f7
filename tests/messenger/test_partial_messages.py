"""Peers that start messages and never finish them cost the server a bounded amount of memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from noisewall.bench.kit import rss
from noisewall.messenger import fragments
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.pipes import client_settings
from noisewall.noise import dh_function
from noisewall.noise.noisesocket import MAX_BODY
from noisewall.noise.stream import NoiseStream, connect
from tests.messenger.test_durability import ServerProcess

DH = dh_function("25519")
PEERS = 16
SENT_EACH = 4 * 1024 * 1024  # what each peer sends of a message it never finishes
MiB = 1024 * 1024
#: The server holds 8 KiB of a stranger's message and 1 MiB of an account holder's, and
#: drops a message that outgrows that; what stays is buffers (~0.3 MiB measured; the old
#: server kept all 4 MiB).
STRANGER_MAX = MEMBER_MAX = MiB


def in_flight(port: int) -> int:
    """Bytes on their way to ``port`` over IPv4 TCP: unsent by clients or unread by the server
    (the kernel's tx_queue / rx_queue columns in /proc/net/tcp)."""
    total = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            remote_port = int(fields[2].split(":")[1], 16)
            tx_queue, rx_queue = (int(part, 16) for part in fields[4].split(":"))
            if local_port == port:
                total += rx_queue
            elif remote_port == port:
                total += tx_queue
    return total


async def flood(streams: list[NoiseStream], port: int) -> None:
    """Each stream sends SENT_EACH bytes of fragments, none the last; returns once the
    server has read them all (the kernel's queues are empty, not a sleep)."""
    body = fragments.FLAG_MORE.to_bytes() + bytes(MAX_BODY - 1)

    async def one(stream: NoiseStream) -> None:
        for _ in range(SENT_EACH // (MAX_BODY - 1)):
            await stream.send(body)

    await asyncio.gather(*(one(stream) for stream in streams))
    async with asyncio.timeout(60):
        while in_flight(port):
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_unfinished_messages_hold_bounded_memory(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    await server.start()
    assert server.process is not None
    pid = server.process.pid
    streams: list[NoiseStream] = []
    try:
        strangers = [await connect("127.0.0.1", server.port,
                                   client_settings(DH.generate_keypair(), None), timeout=10)
                     for _ in range(PEERS)]
        streams += strangers
        before = rss(pid)
        await flood(strangers, server.port)
        per_stranger = (rss(pid) - before) / PEERS

        members = []
        for index in range(PEERS):
            member = await ChatConnection.open("127.0.0.1", server.port,
                                               DH.generate_keypair(), None)
            await member.request({"type": "register", "name": f"user{index}"})
            members.append(member)
        streams += [member.stream for member in members]
        before = rss(pid)
        await flood([member.stream for member in members], server.port)
        per_member = (rss(pid) - before) / PEERS
        print(f"server memory per connection holding an unfinished {SENT_EACH // MiB} MiB "
              f"message: stranger {per_stranger / 1024:.0f} KiB, "
              f"account holder {per_member / 1024:.0f} KiB")
        assert per_stranger <= STRANGER_MAX
        assert per_member <= MEMBER_MAX
        assert server.process.returncode is None
    finally:
        for stream in streams:
            await stream.close()
        await server.stop()
