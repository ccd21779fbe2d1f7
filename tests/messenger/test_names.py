"""Account names over a real server: look-alikes are refused or are the same account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.names import InvalidNameError, canonical_name
from noisewall.messenger.server import ChatServer
from noisewall.noise import dh_function
from noisewall.records.endpoint import Endpoint

DH = dh_function("25519")

#: Strings that print like "bob" (or nearly) and must never be a second account.
REFUSED = [
    "bob\n", "bob\r\n", " bob", "bob ", "bob\t", "bob\x00", "b\u200dob", "bob\u200b",
    "\u200cbob", "\u202ebob", "bob\u202c", "\u2066bob\u2069", "\ufeffbob", "b\u00adob",
    "b\u043eb",  # Cyrillic o
    "bob\u0301",  # a combining accent
]
#: Other spellings of the same account.
SAME = ["BOB", "Bob", "\uff42\uff4f\uff42", "\uff22\uff2f\uff22"]  # full-width bob, BOB


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    chat = ChatServer(tmp_path / "server", listen=Endpoint("127.0.0.1", 0))
    async with chat:
        yield chat


async def connect(server: ChatServer) -> ChatConnection:
    return await ChatConnection.open(*server.address, DH.generate_keypair(), None)


@pytest.mark.parametrize("raw", REFUSED)
def test_look_alikes_have_no_canonical_name(raw: str) -> None:
    with pytest.raises(InvalidNameError):
        canonical_name(raw)


@pytest.mark.parametrize("raw", SAME)
def test_other_spellings_fold_to_one_name(raw: str) -> None:
    assert canonical_name(raw) == "bob"


async def test_look_alikes_are_refused_at_registration(server: ChatServer) -> None:
    bob = await connect(server)
    assert (await bob.request({"type": "register", "name": "bob"}))["name"] == "bob"
    mallory = await connect(server)
    for raw in REFUSED:
        with pytest.raises(ChatError) as refused:
            await mallory.request({"type": "register", "name": raw})
        assert refused.value.code == "bad_request", raw
        assert "name" in str(refused.value), raw
    for raw in SAME:
        with pytest.raises(ChatError) as taken:
            await mallory.request({"type": "register", "name": raw})
        assert taken.value.code == "name_taken", raw
    # bob's own key registering a spelling of its name gets its one account back.
    assert (await bob.request({"type": "register", "name": "\uff42\uff4f\uff42"}))["name"] == "bob"
    await bob.close()
    await mallory.close()


async def test_lookups_use_the_canonical_name(server: ChatServer) -> None:
    bob = await connect(server)
    await bob.request({"type": "register", "name": "bob"})
    await bob.request({"type": "publish_keys", "bundle": {"identity_key": "aWs="}})
    alice = await connect(server)
    await alice.request({"type": "register", "name": "alice"})
    found = await alice.request({"type": "fetch_bundle", "name": "\uff22\uff2f\uff22"})
    assert (found["name"], found["bundle"]["identity_key"]) == ("bob", "aWs=")
    ack = await alice.request({"type": "send", "to": "Bob", "msg_id": "m1", "envelope": {}})
    assert ack["type"] == "ack"
    assert (await bob.pushes.get())["msg_id"] == "m1"
    for raw in ("bob\n", "b\u200dob"):
        requests: list[dict[str, object]] = [
            {"type": "fetch_bundle", "name": raw},
            {"type": "send", "to": raw, "msg_id": "m2", "envelope": {}}]
        for request in requests:
            with pytest.raises(ChatError) as refused:
                await alice.request(request)
            assert refused.value.code == "bad_request"
    await alice.close()
    await bob.close()
