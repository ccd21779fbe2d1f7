"""The typed chat messages: the same bytes as the protocol documents, and strict parsing."""

from __future__ import annotations

import pytest

from noisewall.messenger import messages, wire
from noisewall.messenger.messages import (
    Ack,
    Closed,
    Delivered,
    Error,
    Hello,
    Message,
    Register,
    Send,
    Welcome,
)
from noisewall.messenger.wire import WireError


def test_requests_encode_to_the_documented_bytes() -> None:
    assert wire.encode(Send("bob", "m-1", {"ct": "x"}).to_wire()) == \
        b'{"type":"send","to":"bob","msg_id":"m-1","envelope":{"ct":"x"}}'
    assert wire.encode(Register("alice").to_wire()) == b'{"type":"register","name":"alice"}'
    assert wire.encode(Delivered([3, 4]).to_wire()) == b'{"type":"delivered","queue_ids":[3,4]}'


def test_replies_encode_to_the_documented_bytes() -> None:
    assert wire.encode(Welcome(None, None).to_wire(7)) == \
        b'{"type":"welcome","id":7,"name":null,"media":null}'
    assert wire.encode(Ack("m-1").to_wire(2)) == b'{"type":"ack","id":2,"msg_id":"m-1"}'
    assert wire.encode(Error("name_taken", "taken").to_wire(None)) == \
        b'{"type":"error","id":null,"code":"name_taken","message":"taken"}'


@pytest.mark.parametrize("request_", [Register("alice"), Register("bob", "mainland"), Hello(),
                                      Send("bob", "m-1", {}), Delivered([1])])
def test_every_request_parses_back_to_itself(request_: messages.Request) -> None:
    assert messages.parse_request(wire.decode(wire.encode(request_.to_wire()))) == request_


def test_replies_and_pushes_parse_back() -> None:
    assert messages.parse_reply(Welcome("a", None, 3).to_wire(1)) == Welcome("a", None, 3)
    push = Message(5, "alice", "m-1", {"ct": "x"}, 12.5)
    assert messages.parse_push(push.to_wire()) == push
    assert messages.parse_push(Closed("gone").to_wire()) == Closed("gone")


@pytest.mark.parametrize("raw", [
    {"type": "send", "to": "Bob!", "msg_id": "m", "envelope": {}},
    {"type": "register", "name": "alice", "region": 5},
    {"type": "delivered", "queue_ids": [True]},
    {"type": "explode"},
])
def test_bad_requests_are_typed_errors(raw: dict[str, object]) -> None:
    with pytest.raises(WireError) as caught:
        messages.parse_request(raw)
    assert caught.value.code == "bad_request"


@pytest.mark.parametrize("raw", [
    {"type": "ack", "id": 1},
    {"type": "ok", "id": 1, "one_time_prekeys": True},
    {"type": "surprise", "id": 1},
])
def test_bad_replies_are_typed_errors(raw: dict[str, object]) -> None:
    with pytest.raises(WireError) as caught:
        messages.parse_reply(raw)
    assert caught.value.code == "bad_reply"


def test_a_push_without_a_sender_is_refused() -> None:
    with pytest.raises(WireError):
        messages.parse_push({"type": "message", "queue_id": 1, "msg_id": "m", "envelope": {},
                             "sent_at": 1.0})
