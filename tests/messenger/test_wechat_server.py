"""WeChat mode over real loopback sockets: silent drops, surveillance, groups, images, regions."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from noisewall.clock import ManualClock
from noisewall.messenger import payloads
from noisewall.messenger.client import MessengerClient
from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.messages import Ack, CreateGroup, Register, Send, Welcome
from noisewall.messenger.server import ChatServer
from noisewall.messenger.wechat.client import WeChatClient
from noisewall.messenger.wechat.lists import parse_filter_lists
from noisewall.messenger.wechat.mode import SURVEILLANCE_FILE
from noisewall.noise import dh_function
from noisewall.records.endpoint import Endpoint
from tests.messenger.wechat_helpers import drawing, encoded, near_copy, wechat_server

DH = dh_function("25519")
LISTS = """\
keywords:
  - id: lawyer
    terms: [Wang Quanzhang, human rights lawyer]
  - id: congress
    terms: [party congress, delegates]
    scopes: [group]
  - id: october
    terms: [xi, succession]
    active: {from: 2017-10-18, until: 2017-10-25}
images:
  - {id: banner, phash: PHASH, distance: 6}
"""
BLOCKED = "news about Wang Quanzhang, the human rights lawyer"
PARTIAL = "Wang Quanzhang sends his regards"
# How long a recipient listens for something that must not come: every message that does
# come arrives in milliseconds on loopback.
QUIET = 1.0

Connect = Callable[[str, str], Awaitable[WeChatClient]]


def surveillance(server: ChatServer) -> list[dict[str, object]]:
    path = server.data_dir / SURVEILLANCE_FILE
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2017, 10, 1, tzinfo=UTC).timestamp())


@pytest.fixture
async def server(tmp_path: Path, clock: ManualClock) -> AsyncIterator[ChatServer]:
    async with wechat_server(tmp_path / "server", LISTS, clock) as chat:
        yield chat


@pytest.fixture
async def connect(server: ChatServer) -> AsyncIterator[Connect]:
    opened: list[WeChatClient] = []

    async def open_account(name: str, region: str) -> WeChatClient:
        client = await WeChatClient.open(*server.address, DH.generate_keypair(), name,
                                         region)
        opened.append(client)
        return client

    yield open_account
    for client in opened:
        await client.close()


async def texts(client: WeChatClient, wait: float = QUIET) -> list[str]:
    return [str(m.payload.get("text")) for m in await client.receive(wait)]


async def test_mainland_combination_is_dropped_silently(server: ChatServer,
                                                        connect: Connect) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    blocked = await alice.send("bob", payloads.text(BLOCKED))  # the server said "sent"
    control = await alice.send("bob", payloads.text("lunch at noon?"))
    assert await texts(bob) == ["lunch at noon?"]
    await alice.receive(QUIET)
    assert control in alice.delivered
    assert blocked not in alice.delivered  # no delivery receipt, ever
    [entry] = surveillance(server)
    assert entry["sender"] == "alice" and entry["to"] == "bob" and entry["rule"] == "lawyer"
    assert entry["action"] == "dropped" and entry["msg_id"] == blocked
    assert BLOCKED not in (server.data_dir / SURVEILLANCE_FILE).read_text()


async def test_international_combination_arrives_and_is_logged(server: ChatServer,
                                                               connect: Connect) -> None:
    carol, dave = await connect("carol", "international"), await connect("dave", "international")
    sent = await carol.send("dave", payloads.text(BLOCKED))
    assert await texts(dave) == [BLOCKED]
    await carol.receive(QUIET)
    assert sent in carol.delivered
    [entry] = surveillance(server)
    assert entry["sender"] == "carol" and entry["region"] == "international"
    assert entry["rule"] == "lawyer" and entry["action"] == "delivered"


async def test_some_terms_of_a_combination_arrive(server: ChatServer, connect: Connect) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    await alice.send("bob", payloads.text(PARTIAL))
    assert await texts(bob) == [PARTIAL]
    assert not (server.data_dir / SURVEILLANCE_FILE).read_text()


async def test_groups_block_what_one_to_one_allows(server: ChatServer,
                                                   connect: Connect) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    carol = await connect("carol", "mainland")
    await alice.create_group("study")
    await alice.add_member("study", "bob")
    assert await bob.add_member("study", "carol") == ["alice", "bob", "carol"]
    text = "the party congress delegates arrive"
    await alice.send("bob", payloads.text(text))
    assert await texts(bob) == [text]
    await alice.send_group("study", payloads.text(text))
    await alice.send_group("study", payloads.text("see you all"))
    for member in (bob, carol):
        incoming = await member.receive(QUIET)
        assert [(m.group, m.payload["text"]) for m in incoming] == [("study", "see you all")]
    [entry] = surveillance(server)
    assert entry["scope"] == "group" and entry["to"] == "study" and entry["rule"] == "congress"


async def test_only_members_use_a_group(server: ChatServer, connect: Connect) -> None:
    alice, mallory = await connect("alice", "mainland"), await connect("mallory", "mainland")
    await alice.create_group("study")
    with pytest.raises(ChatError) as outsider:
        await mallory.send_group("study", payloads.text("hi"))
    assert outsider.value.code == "unknown_group"
    with pytest.raises(ChatError) as taken:
        await mallory.create_group("study")
    assert taken.value.code == "name_taken"


async def test_the_region_stays_after_linking_another_number(server: ChatServer,
                                                             connect: Connect) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    account = await alice.link("international")
    assert (account.region, account.linked) == ("mainland", "international")
    await alice.send("bob", payloads.text(BLOCKED))
    assert await texts(bob) == []
    assert surveillance(server)[0]["action"] == "dropped"


async def test_lists_change_with_their_windows(server: ChatServer, connect: Connect,
                                              clock: ManualClock) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    text = "xi and the succession"
    await alice.send("bob", payloads.text(text))
    assert await texts(bob) == [text]
    clock.set(datetime(2017, 10, 20, tzinfo=UTC).timestamp())
    await alice.send("bob", payloads.text(text))
    assert await texts(bob) == []
    clock.set(datetime(2017, 10, 26, tzinfo=UTC).timestamp())
    await alice.send("bob", payloads.text(text))
    assert await texts(bob) == [text]


async def test_a_listed_image_is_dropped_and_another_passes(server: ChatServer,
                                                           connect: Connect) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    await alice.send("bob", payloads.image(near_copy(1), "forwarded.jpg"))
    await alice.send("bob", payloads.image(encoded(drawing(2)), "holiday.png"))
    incoming = await bob.receive(QUIET)
    assert [m.payload["name"] for m in incoming] == ["holiday.png"]
    [entry] = surveillance(server)
    assert entry["kind"] == "image" and entry["rule"] == "banner"


async def test_an_unreadable_image_is_refused_and_the_connection_lives(
        server: ChatServer, connect: Connect) -> None:
    alice, bob = await connect("alice", "mainland"), await connect("bob", "mainland")
    with pytest.raises(ChatError) as refused:
        await alice.send("bob", payloads.image(b"GIF89a garbage", "broken.gif"))
    assert refused.value.code == "bad_request" and "not a readable image" in str(refused.value)
    with pytest.raises(ChatError) as opaque:
        await alice.connection.call(Send("bob", "m-1", {"ct": "an E2E envelope"}), Ack)
    assert opaque.value.code == "bad_request" and "reads messages" in str(opaque.value)
    await alice.send("bob", payloads.text("still here"))
    assert await texts(bob) == ["still here"]


async def test_registration_needs_a_region(server: ChatServer) -> None:
    connection = await ChatConnection.open(*server.address, DH.generate_keypair(), None)
    async with connection:
        with pytest.raises(ChatError) as missing:
            await connection.call(Register("erin"), Welcome)
        assert "region" in str(missing.value)
        with pytest.raises(ChatError) as wrong:
            await connection.call(Register("erin", "atlantis"), Welcome)
        assert wrong.value.code == "bad_request"
        assert (await connection.call(Register("erin", "mainland"), Welcome)).name == "erin"


async def test_the_same_lists_cannot_act_on_an_e2e_server(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lists = parse_filter_lists(LISTS.replace("PHASH", "cee5969a0ae906d9"), "lists.yaml")
    with caplog.at_level(logging.WARNING, "noisewall.messenger"):
        chat = ChatServer(tmp_path / "server", filters=lists, listen=Endpoint("127.0.0.1", 0))
    assert "cannot read messages, so the lists cannot act" in caplog.text
    async with chat:
        port = chat.address.port
        address = f"127.0.0.1:{port}"
        async with MessengerClient.open(tmp_path / "alice") as alice, \
                MessengerClient.open(tmp_path / "bob") as bob:
            await bob.register("bob", address)
            await alice.register("alice", address)
            await alice.send_text("bob", BLOCKED)
            received = await bob.receive(wait=2.0)
            assert [r.entry.body["text"] for r in received] == [BLOCKED]
        stranger = await ChatConnection.open("127.0.0.1", port, DH.generate_keypair(), None)
        async with stranger:
            await stranger.call(Register("carol", "mainland"), Welcome)
            with pytest.raises(ChatError) as groups:
                await stranger.call(CreateGroup("study"), Welcome)
            assert groups.value.code == "unsupported"
    assert not (tmp_path / "server" / SURVEILLANCE_FILE).exists()
