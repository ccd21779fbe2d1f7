"""Every chat request shape, over a real Noise connection to a running chat server.

Hypothesis writes requests of every type with every field given a value of
any JSON type (and some frames that are not JSON at all) on a registered
client's connection. Each must get a reply (an ``error`` with a code for bad
ones) or cost only that connection; nothing may be logged with a traceback;
and afterwards the same connection (if still open) and a fresh client both
get their ``hello`` answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.messenger import fragments, wire
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.pipes import client_settings
from noisewall.messenger.server import ChatServer
from noisewall.noise import KeyPair, NoiseError, dh_function
from noisewall.noise.stream import NoiseStream, connect
from noisewall.records.endpoint import Endpoint
from tests.surfaces.background import BackgroundLoop, ErrorRecords

DH = dh_function("25519")
REPLY_TIMEOUT = 10.0
#: The id of the ``hello`` that closes each example's requests.
CLOSING_HELLO = "closing-hello"
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: Any text, names the server knows, and lone surrogates: JSON's ``\ud800`` escapes decode
#: to strings that are not Unicode text and cannot be encoded (or stored) as UTF-8.
TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["bob", "alice", "", "\0", "bob\n"]),
                 st.sampled_from(["\ud800", "bob\udfff", "\udc00x"]))
NUMBERS = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
SCALARS = st.none() | st.booleans() | NUMBERS | TEXT
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12)
#: For each request type, its fields as wire.py reads them: a well-formed value, or any
#: JSON value of any type in its place.
TEMPLATES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "register": {"name": st.sampled_from(["alice", "carol", "bob"]) | TEXT},
    "hello": {},
    "publish_keys": {"bundle": st.fixed_dictionaries(
        {"identity": TEXT, "signed_prekey": TEXT},
        optional={"one_time_prekeys": st.lists(TEXT, max_size=4) | JSON})},
    "fetch_bundle": {"name": st.sampled_from(["alice", "bob", "nobody"]) | TEXT},
    "send": {"to": st.sampled_from(["alice", "bob", "nobody"]) | TEXT,
             "msg_id": st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True) | TEXT,
             "envelope": st.dictionaries(TEXT, JSON, max_size=4)},
    "delivered": {"queue_ids": st.lists(NUMBERS, max_size=6)},
}
REQUESTS = st.one_of(*(
    st.fixed_dictionaries(
        {"type": st.just(kind)},
        optional={field: value | JSON for field, value in fields.items()} | {"extra": JSON})
    for kind, fields in TEMPLATES.items()
), st.dictionaries(TEXT, JSON, max_size=3).map(lambda fields: {**fields, "type": "nonsense"}))
FRAMES = st.one_of(
    REQUESTS.map(wire.encode),
    st.binary(max_size=80),
    JSON.map(lambda value: wire.encode({"value": value})[10:-1]),  # any JSON value, not an object
)


@dataclass
class Chat:
    background: BackgroundLoop
    server: ChatServer
    alice: KeyPair
    errors: ErrorRecords


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    server = ChatServer(tmp_path_factory.mktemp("chat"), listen=Endpoint("127.0.0.1", 0))
    alice = DH.generate_keypair()
    with BackgroundLoop().running() as background, ErrorRecords().watching(
            "noisewall") as errors:
        background.run(server.start())
        background.run(register(server, alice, "alice"))
        background.run(register(server, DH.generate_keypair(), "bob"))
        try:
            yield Chat(background, server, alice, errors)
        finally:
            background.run(server.close())


async def register(server: ChatServer, key: KeyPair, name: str) -> None:
    async with await ChatConnection.open(*server.address, key, None) as connection:
        await connection.request({"type": "register", "name": name})


async def hello_answered(stream: NoiseStream) -> bool:
    """Whether ``hello`` on ``stream`` gets its ``welcome`` (pushes and late replies skipped)."""
    await fragments.send(stream, wire.encode({"type": "hello", "id": "probe"}))
    async with asyncio.timeout(REPLY_TIMEOUT):
        async for data in fragments.receive(stream):
            reply = wire.decode(data)
            if reply.get("id") == "probe":
                return bool(reply["type"] == "welcome")
    return False


async def exchange(server: ChatServer, key: KeyPair, frames: list[bytes]) -> list[str]:
    """Send ``frames`` on a fresh connection as ``key``; the problems seen, if any."""
    stream = await connect(*server.address, client_settings(key, server.static.public))
    problems = []
    try:
        for frame in frames:
            await fragments.send(stream, frame)
        if not await hello_answered(stream):
            problems.append("hello after the requests was not welcomed")
    except (NoiseError, ConnectionError, OSError, wire.WireError):
        pass  # the server may drop a connection that broke the protocol: that one alone
    finally:
        with contextlib.suppress(NoiseError, ConnectionError, OSError):
            await stream.close()
    fresh = await connect(*server.address,
                          client_settings(DH.generate_keypair(), server.static.public))
    try:
        if not await hello_answered(fresh):
            problems.append("a fresh client's hello was not welcomed")
    finally:
        await fresh.close()
    return problems


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(frames=st.lists(FRAMES, min_size=1, max_size=4))
def test_no_request_shape_breaks_the_server(chat: Chat, frames: list[bytes]) -> None:
    problems = chat.background.run(exchange(chat.server, chat.alice, frames))
    assert problems == []
    assert chat.errors.take() == []


@pytest.mark.slow
@PROPERTY_SETTINGS
@given(requests=st.lists(REQUESTS, min_size=1, max_size=4))
def test_every_request_gets_a_reply_or_none_by_design(chat: Chat,
                                                      requests: list[dict[str, Any]]) -> None:
    """Each request is answered (an error carries a code), but ``delivered`` only on error.

    A request holding a lone surrogate is refused before its fields (its id too) are read,
    so its error has no id.
    """
    replies, unnumbered = chat.background.run(answers(chat.server, chat.alice, requests))
    for index, request in enumerate(requests):
        reply = replies.get(index)
        if (request["type"] == "delivered" and reply is None) or not_text(request):
            continue
        assert reply is not None, request
        assert reply["type"] != "error" or isinstance(reply.get("code"), str), reply
    assert [reply["code"] for reply in unnumbered] == [
        "bad_request" for request in requests if not_text(request)]
    assert chat.errors.take() == []


def not_text(request: dict[str, Any]) -> bool:
    """Whether a string in ``request`` holds a lone surrogate (so it is not UTF-8 text)."""
    try:
        json.dumps(request, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def answers(server: ChatServer, key: KeyPair, requests: list[dict[str, Any]]
                  ) -> tuple[dict[object, dict[str, Any]], list[dict[str, Any]]]:
    """The replies to ``requests`` by position, and the replies without an id, as ``key``.

    Waits for a reply to each request but ``delivered`` (answered only on error); sends
    are answered concurrently, so replies come in any order. The server answers every other
    request in order, so a closing ``hello`` is answered after any ``delivered`` error: a
    list of ``delivered`` alone ends there instead of waiting out the timeout.
    """
    stream = await connect(*server.address, client_settings(key, server.static.public))
    expected: set[object] = {index for index, request in enumerate(requests)
                             if request["type"] != "delivered" and not not_text(request)}
    expected.add(CLOSING_HELLO)
    unnumbered_expected = sum(map(not_text, requests))
    replies: dict[object, dict[str, Any]] = {}
    unnumbered: list[dict[str, Any]] = []
    try:
        for index, request in enumerate(requests):
            await fragments.send(stream, wire.encode({**request, "id": index}))
        await fragments.send(stream, wire.encode({"type": "hello", "id": CLOSING_HELLO}))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPLY_TIMEOUT):
                async for data in fragments.receive(stream):
                    reply = wire.decode(data)
                    if reply.get("type") == "message":
                        continue
                    if reply.get("id") is None:
                        unnumbered.append(reply)
                    else:
                        replies[reply["id"]] = reply
                    if expected <= replies.keys() and len(unnumbered) >= unnumbered_expected:
                        break
    finally:
        await stream.close()
    return replies, unnumbered


@pytest.mark.parametrize("text", [rb'"\ud800"', rb'"x\uDFFFy"', rb'"\udc00\ud800"'])
def test_a_lone_surrogate_escape_is_a_bad_request(text: bytes) -> None:
    """It used to reach SQLite (a one-time prekey) and fail there, dropping the connection."""
    with pytest.raises(wire.WireError, match="surrogate"):
        wire.decode(b'{"type":"publish_keys","bundle":{"one_time_prekeys":[' + text + b"]}}")


def test_a_surrogate_pair_escape_is_text() -> None:
    assert wire.decode(rb'{"type":"hello","x":"\ud83d\ude00"}')["x"] == "\N{GRINNING FACE}"
