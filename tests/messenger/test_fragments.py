"""The messenger's fragmentation layer: sans-IO split/join, and large messages end to end."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger import fragments
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.server import ChatServer
from noisewall.noise import FramingError, MessageTooLongError, dh_function
from noisewall.noise.noisesocket import MAX_BODY
from noisewall.records.endpoint import Endpoint

DH = dh_function("25519")
CHUNK = MAX_BODY - 1  # application bytes per body


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7, 1 << 20]
)
def test_split_and_join_round_trip(size: int) -> None:
    message = os.urandom(size)
    bodies = list(fragments.split(message, MAX_BODY))
    assert len(bodies) == max(1, -(-size // CHUNK))
    assert all(len(body) <= MAX_BODY for body in bodies)
    assert [body[0] for body in bodies] == [fragments.FLAG_MORE] * (len(bodies) - 1) + [
        fragments.FLAG_LAST
    ]
    reassembler = fragments.Reassembler()
    joined = [reassembler.feed(bytes(body)) for body in bodies]
    assert joined[:-1] == [None] * (len(bodies) - 1)
    assert joined[-1] == message
    assert not reassembler.inside_message


@pytest.mark.parametrize("body", [b"", b"\x02", b"\xffhello"])
def test_a_body_without_a_valid_flag_is_refused(body: bytes) -> None:
    with pytest.raises(FramingError):
        fragments.Reassembler().feed(body)


def test_a_message_over_the_limit_is_refused() -> None:
    reassembler = fragments.Reassembler(limit=100)
    assert reassembler.feed(b"\x01" + bytes(60)) is None
    with pytest.raises(MessageTooLongError):
        reassembler.feed(b"\x00" + bytes(41))
    with pytest.raises(MessageTooLongError):
        fragments.Reassembler(limit=100).feed(b"\x00" + bytes(101))
    assert fragments.Reassembler(limit=100).feed(b"\x00" + bytes(100)) == bytes(100)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    chat = ChatServer(tmp_path / "server", listen=Endpoint("127.0.0.1", 0))
    async with chat:
        yield chat


async def registered(server: ChatServer, name: str) -> ChatConnection:
    connection = await ChatConnection.open(*server.address, DH.generate_keypair(), None)
    await connection.request({"type": "register", "name": name})
    return connection


async def test_a_large_envelope_crosses_the_server_in_fragments(server: ChatServer) -> None:
    """~700 KB of envelope: a dozen bodies each way, pushed to the recipient intact."""
    alice = await registered(server, "alice")
    bob = await registered(server, "bob")
    sent = alice.stream.connection.transport.send
    assert sent is not None
    before = sent.n
    envelope = {"ciphertext": base64.b64encode(os.urandom(500_000)).decode()}
    reply = await alice.request(
        {"type": "send", "to": "bob", "msg_id": "big-1", "envelope": envelope}
    )
    assert reply["type"] == "ack"
    assert sent.n - before >= 10  # it really went as many transport messages
    push = await asyncio.wait_for(bob.pushes.get(), 10)
    assert push["envelope"] == envelope
    await alice.close()
    await bob.close()


async def test_a_body_without_a_flag_closes_only_that_connection(server: ChatServer) -> None:
    alice = await registered(server, "alice")
    mallory = await registered(server, "mallory")
    await mallory.stream.send(b'{"type":"hello"}')  # no flag byte: not the messenger protocol
    closed = await asyncio.wait_for(mallory.pushes.get(), 5)
    assert closed["type"] == "closed"
    assert (await alice.request({"type": "hello"}))["name"] == "alice"
    await alice.close()
    await mallory.close()
