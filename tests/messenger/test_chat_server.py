"""The chat server over real loopback sockets: accounts, Noise Pipes, store-and-forward."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger import fragments
from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.pipes import IK, XX, XX_FALLBACK
from noisewall.messenger.server import ChatServer
from noisewall.messenger.store import ChatStore
from noisewall.noise import KeyPair, NegotiationError, NoiseSettings, dh_function
from noisewall.noise.stream import connect
from noisewall.records.endpoint import Endpoint

DH = dh_function("25519")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    chat = ChatServer(tmp_path / "server", listen=Endpoint("127.0.0.1", 0))
    async with chat:
        yield chat


async def open_client(server: ChatServer, key: KeyPair,
                      server_key: bytes | None = None) -> ChatConnection:
    return await ChatConnection.open(*server.address, key, server_key)


async def registered(server: ChatServer, name: str) -> tuple[ChatConnection, KeyPair]:
    key = DH.generate_keypair()
    connection = await open_client(server, key)
    reply = await connection.request({"type": "register", "name": name})
    assert reply["type"] == "welcome" and reply["name"] == name
    return connection, key


async def next_push(connection: ChatConnection, timeout: float = 5) -> dict[str, object]:
    return await asyncio.wait_for(connection.pushes.get(), timeout)


async def test_register_and_authenticate_by_key_alone(server: ChatServer) -> None:
    alice, key = await registered(server, "alice")
    assert alice.stream.protocol_name == XX
    cached = alice.server_key
    assert cached == server.static.public
    await alice.close()
    # Later connections: IK with the cached key, no name, no password: the key is the account.
    again = await open_client(server, key, cached)
    assert again.stream.protocol_name == IK
    assert (await again.request({"type": "hello"}))["name"] == "alice"
    await again.close()


async def test_stale_server_key_falls_back_to_xx(server: ChatServer) -> None:
    alice, key = await registered(server, "alice")
    await alice.close()
    stale = DH.generate_keypair().public
    again = await open_client(server, key, stale)
    assert again.stream.protocol_name == XX_FALLBACK
    assert again.server_key == server.static.public
    assert (await again.request({"type": "hello"}))["name"] == "alice"
    await again.close()


async def test_names_are_unique_and_bound_to_one_key(server: ChatServer) -> None:
    alice, _ = await registered(server, "alice")
    mallory = await open_client(server, DH.generate_keypair())
    with pytest.raises(ChatError) as taken:
        await mallory.request({"type": "register", "name": "alice"})
    assert taken.value.code == "name_taken"
    with pytest.raises(ChatError) as second:
        await alice.request({"type": "register", "name": "alice2"})
    assert second.value.code == "already_registered"
    # Registering the same name with the same key again is harmless.
    assert (await alice.request({"type": "register", "name": "alice"}))["name"] == "alice"
    with pytest.raises(ChatError) as bad:
        await mallory.request({"type": "register", "name": "Not A Name!"})
    assert bad.value.code == "bad_request"
    await alice.close()
    await mallory.close()


async def test_unregistered_keys_can_do_nothing_but_register(server: ChatServer) -> None:
    stranger = await open_client(server, DH.generate_keypair())
    assert (await stranger.request({"type": "hello"}))["name"] is None
    for request in ({"type": "send", "to": "alice", "msg_id": "m1", "envelope": {}},
                    {"type": "fetch_bundle", "name": "alice"}):
        with pytest.raises(ChatError) as refused:
            await stranger.request(request)
        assert refused.value.code == "not_registered"
    await stranger.close()


async def test_store_and_forward_with_ack_delete_and_no_duplicates(server: ChatServer) -> None:
    alice, _ = await registered(server, "alice")
    bob, bob_key = await registered(server, "bob")
    await bob.close()  # bob is offline
    envelope = {"ciphertext": "b3BhcXVl"}
    for _ in range(2):  # a resend with the same msg_id
        reply = await alice.request({"type": "send", "to": "bob", "msg_id": "m-1",
                                     "envelope": envelope})
        assert reply == {"type": "ack", "id": reply["id"], "msg_id": "m-1"}
    with pytest.raises(ChatError) as unknown:
        await alice.request({"type": "send", "to": "nobody", "msg_id": "m-2", "envelope": {}})
    assert unknown.value.code == "unknown_recipient"

    bob = await open_client(server, bob_key, server.static.public)
    push = await next_push(bob)
    assert (push["from"], push["msg_id"], push["envelope"]) == ("alice", "m-1", envelope)
    with pytest.raises(TimeoutError):  # delivered once, not twice
        await next_push(bob, timeout=0.5)
    # Not acknowledged yet: a reconnect gets it again.
    await bob.close()
    bob = await open_client(server, bob_key, server.static.public)
    push = await next_push(bob)
    await bob.notify({"type": "delivered", "queue_ids": [push["queue_id"]]})
    await bob.request({"type": "hello"})  # a round trip: the delete has been processed
    await bob.close()
    bob = await open_client(server, bob_key, server.static.public)
    with pytest.raises(TimeoutError):
        await next_push(bob, timeout=0.5)
    # And the same msg_id again after deletion is still not delivered twice.
    await alice.request({"type": "send", "to": "bob", "msg_id": "m-1", "envelope": envelope})
    with pytest.raises(TimeoutError):
        await next_push(bob, timeout=0.5)
    # A live recipient gets new messages pushed at once.
    await alice.request({"type": "send", "to": "bob", "msg_id": "m-3", "envelope": envelope})
    assert (await next_push(bob))["msg_id"] == "m-3"
    await alice.close()
    await bob.close()


async def test_prekey_directory_hands_out_each_one_time_key_once(server: ChatServer) -> None:
    alice, _ = await registered(server, "alice")
    bob, _ = await registered(server, "bob")
    bundle = {"identity_key": "aWs=", "signed_prekey": "c3Br", "one_time_prekeys": ["a", "b"]}
    assert (await bob.request({"type": "publish_keys", "bundle": bundle}))["one_time_prekeys"] == 2
    seen = []
    for _ in range(3):
        reply = await alice.request({"type": "fetch_bundle", "name": "bob"})
        assert reply["bundle"]["identity_key"] == "aWs="
        seen.append(tuple(reply["bundle"]["one_time_prekeys"]))
    assert sorted(seen) == [(), ("a",), ("b",)]
    await alice.close()
    await bob.close()


async def test_garbage_gets_an_error_and_the_connection_lives(server: ChatServer) -> None:
    alice, _ = await registered(server, "alice")
    for junk in (b"\xff\xfe not json", b"[1,2,3]", b'{"type": 5}', b'{"type": "explode"}'):
        await fragments.send(alice.stream, junk)
    await alice.request({"type": "hello"})  # still served after four bad requests
    for queue_ids in ([2**70], [-1], [True], list(range(1001)), "1,2"):
        with pytest.raises(ChatError) as ids:
            await alice.request({"type": "delivered", "queue_ids": queue_ids})
        assert ids.value.code == "bad_request"
    with pytest.raises(ChatError) as malformed:
        await alice.request({"type": "send", "to": "alice", "msg_id": "x" * 80, "envelope": {}})
    assert malformed.value.code == "bad_request"
    await alice.close()


async def test_silent_and_hostile_clients_do_not_hurt_others(server: ChatServer) -> None:
    alice, _ = await registered(server, "alice")
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.address.port)
    _, garbage_writer = await asyncio.open_connection("127.0.0.1", server.address.port)
    garbage_writer.write(b"\x00\x05hello" * 100)
    # IK towards a wrong server key: a Noise Pipes client falls back to XX and is
    # then just an unregistered stranger; a strict IK client is refused.
    wrong_key = DH.generate_keypair().public
    stranger = await ChatConnection.open(*server.address, DH.generate_keypair(),
                                         wrong_key, timeout=3)
    assert stranger.stream.protocol_name == XX_FALLBACK
    assert (await stranger.request({"type": "hello"}))["name"] is None
    await stranger.close()
    strict = NoiseSettings(protocol=IK, static=DH.generate_keypair(), remote_static=wrong_key)
    with pytest.raises(NegotiationError):
        await connect(*server.address, strict, timeout=3)
    assert (await alice.request({"type": "hello"}))["name"] == "alice"
    garbage_writer.close()
    silent_writer.close()
    await alice.close()
    del silent_reader


async def test_messages_expire_after_the_ttl(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = ChatStore(tmp_path / "s.sqlite3", ttl=30 * 24 * 3600, clock=lambda: now[0])
    try:
        await store.register("bob", b"k" * 32)
        await store.enqueue("alice", "bob", "m1", {"c": 1})
        now[0] += 29 * 24 * 3600
        assert await store.expire() == 0
        now[0] += 2 * 24 * 3600
        assert await store.expire() == 1
        assert await store.pending("bob") == []
    finally:
        store.close()


async def test_the_server_database_holds_no_plaintext(server: ChatServer) -> None:
    alice, _ = await registered(server, "alice")
    await registered(server, "bob")
    await alice.request({"type": "send", "to": "bob", "msg_id": "m-1",
                         "envelope": {"ciphertext": "Q0lQSEVSVEVYVA=="}})
    await alice.close()
    db = sqlite3.connect(server.data_dir / "chat.sqlite3")
    (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"
    assert db.execute("SELECT COUNT(*) FROM queue").fetchone() == (1,)
    db.close()
