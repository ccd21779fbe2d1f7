"""The chat server's limits over real loopback sockets: probation, caps, a locked store, quotas."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger import fragments, wire
from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.limits import ConnectionLimits, StoreLimits
from noisewall.messenger.pipes import client_settings
from noisewall.messenger.server import ChatServer
from noisewall.noise import KeyPair, NoiseError, dh_function
from noisewall.noise.stream import NoiseStream, connect
from noisewall.records.endpoint import Endpoint

DH = dh_function("25519")


async def stranger(server: ChatServer) -> NoiseStream:
    """A finished handshake with a key that has no account, nothing sent."""
    return await connect(*server.address,
                         client_settings(DH.generate_keypair(), None), timeout=5)


async def last_words(stream: NoiseStream) -> list[dict[str, object]]:
    """Every message the server sends until it closes the connection."""
    said = []
    async with asyncio.timeout(5):
        try:
            async for data in fragments.receive(stream):
                said.append(wire.decode(data))
        except (NoiseError, ConnectionError):
            pass
    await stream.close()
    return said


async def member(server: ChatServer, name: str,
                 key: KeyPair | None = None) -> ChatConnection:
    """A connection of ``name``'s account (registered now, with a new key, if no key is given)."""
    connection = await ChatConnection.open(*server.address,
                                           key or DH.generate_keypair(), None)
    if key is None:
        await connection.request({"type": "register", "name": name})
    return connection


async def open_connections(server: ChatServer, count: int) -> None:
    async with asyncio.timeout(5):
        while server.connections != count:
            await asyncio.sleep(0.01)


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[ChatServer]:
    limits = ConnectionLimits(max_connections=6, max_unregistered=3, auth_timeout=0.5,
                              log_burst=3, log_period=3600)
    chat = ChatServer(tmp_path / "server", limits=limits, listen=Endpoint("127.0.0.1", 0))
    async with chat:
        yield chat


async def test_a_stranger_must_register_within_the_auth_timeout(strict: ChatServer) -> None:
    idle = await stranger(strict)
    assert await last_words(idle) == [
        {"type": "error", "id": None, "code": "auth_timeout", "message": "register within 0.5 s"}]
    # An account holder stays past the timeout: registering ended its probation.
    alice = await member(strict, "alice")
    await asyncio.sleep(1)
    assert (await alice.request({"type": "hello"}))["name"] == "alice"
    await alice.close()


async def test_strangers_cannot_crowd_out_account_holders(
        strict: ChatServer, caplog: pytest.LogCaptureFixture) -> None:
    alice_key = DH.generate_keypair()
    alice = await ChatConnection.open(*strict.address, alice_key, None)
    await alice.request({"type": "register", "name": "alice"})
    await alice.close()
    crowd = [await stranger(strict) for _ in range(3)]
    [refusal] = await last_words(await stranger(strict))
    assert refusal["code"] == "server_busy"
    # An account holder still gets in past the strangers' cap.
    alice = await member(strict, "alice", alice_key)
    assert (await alice.request({"type": "hello"}))["name"] == "alice"
    # The hard cap (6) closes further connections before any handshake, and the log
    # keeps to its budget (3 lines per kind) however many are refused.
    await open_connections(strict, 4)
    hanging = [await asyncio.open_connection(*strict.address) for _ in range(2)]
    await open_connections(strict, 6)
    with caplog.at_level(logging.INFO, "noisewall.messenger"):
        for _ in range(20):
            reader, writer = await asyncio.open_connection(*strict.address)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
    refused = [r for r in caplog.records if "closed: refused" in r.getMessage()]
    assert len(refused) == 3
    for _, writer in hanging:
        writer.close()
    for stream in crowd:
        await stream.close()
    await alice.close()


async def test_a_locked_database_fails_the_request_not_the_server(tmp_path: Path) -> None:
    chat = ChatServer(tmp_path / "server", store_limits=StoreLimits(busy_timeout=0.2),
                      listen=Endpoint("127.0.0.1", 0))
    async with chat:
        alice = await member(chat, "alice")
        await (await member(chat, "bob")).close()
        # Another process takes the write lock and keeps it past the busy timeout.
        other = sqlite3.connect(chat.data_dir / "chat.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ChatError) as locked:
            await alice.request({"type": "send", "to": "bob", "msg_id": "m1", "envelope": {}},
                                timeout=5)
        assert locked.value.code == "unavailable"
        other.execute("ROLLBACK")
        other.close()
        # The store thread lived: the same request now goes through, and so do new ones.
        ack = await alice.request({"type": "send", "to": "bob", "msg_id": "m1", "envelope": {}},
                                  timeout=5)
        assert ack["type"] == "ack"
        carol = await member(chat, "carol")
        assert (await carol.request({"type": "hello"}, timeout=5))["name"] == "carol"
        await carol.close()
        await alice.close()


async def test_per_account_quotas(tmp_path: Path) -> None:
    quotas = StoreLimits(max_inbox=3, max_outbox=2, max_prekeys=5, max_bundle_bytes=200)
    chat = ChatServer(tmp_path / "server", store_limits=quotas, listen=Endpoint("127.0.0.1", 0))
    async with chat:
        alice, carol = await member(chat, "alice"), await member(chat, "carol")
        bob_key = DH.generate_keypair()
        bob = await ChatConnection.open(*chat.address, bob_key, None)
        await bob.request({"type": "register", "name": "bob"})
        await bob.close()

        async def send(sender: ChatConnection, msg_id: str) -> str:
            try:
                await sender.request({"type": "send", "to": "bob", "msg_id": msg_id,
                                      "envelope": {}})
            except ChatError as exc:
                return exc.code
            return "ack"

        assert [await send(alice, m) for m in ("a1", "a2", "a3")] == ["ack", "ack",
                                                                       "quota_exceeded"]
        assert await send(alice, "a1") == "ack"  # a resend is no new message
        assert [await send(carol, m) for m in ("c1", "c2")] == ["ack", "quota_exceeded"]
        # bob takes his messages: the quotas free up.
        bob = await member(chat, "bob", bob_key)
        pushes = [await asyncio.wait_for(bob.pushes.get(), 5) for _ in range(3)]
        await bob.notify({"type": "delivered", "queue_ids": [p["queue_id"] for p in pushes]})
        await bob.request({"type": "hello"})
        assert [await send(alice, "a4"), await send(carol, "c3")] == ["ack", "ack"]

        prekeys = [f"k{i}" for i in range(6)]
        with pytest.raises(ChatError) as too_many:
            await bob.request({"type": "publish_keys", "bundle": {"one_time_prekeys": prekeys}})
        assert too_many.value.code == "quota_exceeded"
        stock = await bob.request({"type": "publish_keys",
                                   "bundle": {"one_time_prekeys": prekeys[:5]}})
        assert stock["one_time_prekeys"] == 5  # the refused request changed nothing
        with pytest.raises(ChatError) as too_big:
            await bob.request({"type": "publish_keys", "bundle": {"identity_key": "k" * 300}})
        assert too_big.value.code == "quota_exceeded"
        for connection in (alice, bob, carol):
            await connection.close()


async def test_an_unfinished_message_holds_at_most_the_hold(strict: ChatServer) -> None:
    body = fragments.FLAG_MORE.to_bytes() + bytes(60_000)
    # A stranger holds 8 KiB: a longer message is counted, dropped and refused at its end.
    idle = await stranger(strict)
    for _ in range(3):
        await idle.send(body)
    await idle.send(fragments.FLAG_LAST.to_bytes() + b"{}")
    reply = wire.decode((await idle.receive(timeout=5))[1:])  # after the fragment flag
    assert (reply["code"], reply["message"]) == ("too_large",
                                                 "message of 180002 bytes exceeds 8192")
    await idle.close()
    # An account holds one request (1 MiB); a longer one is refused and the connection lives.
    alice = await member(strict, "alice")
    for _ in range(20):
        await alice.stream.send(body)
    await alice.stream.send(fragments.FLAG_LAST.to_bytes() + b"{}")
    assert (await alice.request({"type": "hello"}))["name"] == "alice"
    await alice.close()


def test_the_reassembler_drops_what_outgrows_its_hold() -> None:
    reassembler = fragments.Reassembler(hold=100)
    for _ in range(50):
        assert reassembler.feed(b"\x01" + bytes(60)) is None
        assert reassembler.held <= 100
    assert reassembler.feed(b"\x00" + bytes(10)) == fragments.Oversized(3010)
    assert not reassembler.inside_message
    assert reassembler.feed(b"\x01" + bytes(60)) is None
    assert reassembler.feed(b"\x00" + bytes(40)) == bytes(100)
