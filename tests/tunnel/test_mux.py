"""The sans-IO mux: framing, stream life cycle, credit, and garbage from the peer."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisewall.tunnel.mux import (
    CreditReceived,
    DataReceived,
    EndReceived,
    FrameParser,
    FrameType,
    MuxConnection,
    MuxError,
    Opened,
    OpenRequested,
    PongReceived,
    Refused,
    ResetReceived,
    encode_frame,
)


def _pair(window: int = 1000) -> tuple[MuxConnection, MuxConnection]:
    return MuxConnection(True, window), MuxConnection(False, window)


def _deliver(sender: MuxConnection, receiver: MuxConnection) -> list[object]:
    return list(receiver.receive_data(sender.data_to_send()))


def test_open_data_eof_round_trip() -> None:
    client, server = _pair()
    stream = client.open_stream("example.org", 443)
    assert _deliver(client, server) == [OpenRequested(stream, "example.org", 443)]
    server.accept(stream)
    assert _deliver(server, client) == [Opened(stream)]
    assert client.send_data(stream, b"hello") == 5
    client.send_eof(stream)
    assert _deliver(client, server) == [DataReceived(stream, b"hello"), EndReceived(stream)]
    server.send_data(stream, b"world")
    server.send_eof(stream)
    assert _deliver(server, client) == [DataReceived(stream, b"world"), EndReceived(stream)]
    assert client.stream_count == server.stream_count == 0


def test_refused_and_reset_streams_are_forgotten() -> None:
    client, server = _pair()
    first, second = client.open_stream("10.0.0.1", 1), client.open_stream("10.0.0.2", 2)
    _deliver(client, server)
    server.refuse(first, 0x02)
    server.accept(second)
    assert _deliver(server, client) == [Refused(first, 0x02), Opened(second)]
    client.reset(second)
    assert _deliver(client, server) == [ResetReceived(second)]
    # Frames that crossed the reset in flight are ignored, not errors.
    server._emit(FrameType.DATA, second, b"late")
    assert _deliver(server, client) == []
    assert client.stream_count == server.stream_count == 0


def test_credit_bounds_each_stream_and_a_stalled_stream_does_not_block_another() -> None:
    client, server = _pair(window=100)
    slow, fast = client.open_stream("h", 1), client.open_stream("h", 2)
    _deliver(client, server)
    assert client.send_data(slow, b"x" * 250) == 100  # the window, no more
    assert client.send_credit(slow) == 0
    assert client.send_data(fast, b"y" * 80) == 80  # another stream is unaffected
    events = _deliver(client, server)
    assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == 180
    server.consumed(slow, 40)  # below half a window: no CREDIT frame yet
    assert server.data_to_send() == b""
    server.consumed(slow, 60)
    assert _deliver(server, client) == [CreditReceived(slow)]
    assert client.send_credit(slow) == 100


def test_sending_beyond_credit_is_a_protocol_violation() -> None:
    client, server = _pair(window=10)
    stream = client.open_stream("h", 1)
    _deliver(client, server)
    with pytest.raises(MuxError, match="beyond its credit"):
        server.receive_data(encode_frame(FrameType.DATA, stream, b"z" * 11))


def test_frames_built_in_place_are_the_frames_send_data_builds() -> None:
    client, server = _pair(window=10)
    stream = client.open_stream("h", 1)
    _deliver(client, server)
    buffer = bytearray(7) + b"hello"
    client.frame_data(stream, memoryview(buffer)[:7], 5)
    assert bytes(buffer) == encode_frame(FrameType.DATA, stream, b"hello")
    assert list(server.receive_data(buffer)) == [DataReceived(stream, b"hello")]
    assert client.send_credit(stream) == 5  # charged to the stream's credit
    with pytest.raises(MuxError, match="credit"):
        client.frame_data(stream, memoryview(bytearray(7)), 6)
    client.send_eof(stream)
    with pytest.raises(MuxError, match="already ended"):
        client.frame_data(stream, memoryview(bytearray(7)), 1)


def test_ping_is_answered_with_the_same_value() -> None:
    client, server = _pair()
    client.ping(12345)
    assert _deliver(client, server) == []
    assert _deliver(server, client) == [PongReceived(12345)]


@pytest.mark.parametrize("frame", [
    encode_frame(FrameType.OPEN, 2, b"\x00\x50host"),  # even id
    encode_frame(FrameType.OPEN, 1, b"\x00\x00host"),  # port 0
    encode_frame(FrameType.OPEN, 1, b"\x00"),  # no host
    encode_frame(FrameType.DATA, 7, b"data"),  # never opened
    encode_frame(FrameType.PING, 0, b"short"),
    bytes((0xEE, 0, 0, 0, 1, 0, 0)),  # unknown type
])
def test_the_server_rejects_malformed_frames(frame: bytes) -> None:
    with pytest.raises(MuxError):
        MuxConnection(False).receive_data(frame)


def test_the_server_never_accepts_a_stream_id_twice() -> None:
    server = MuxConnection(False)
    server.receive_data(encode_frame(FrameType.OPEN, 3, b"\x00\x50host"))
    with pytest.raises(MuxError, match="not new"):
        server.receive_data(encode_frame(FrameType.OPEN, 1, b"\x00\x50host"))


@given(st.lists(st.tuples(st.sampled_from(list(FrameType)), st.integers(0, 2**32 - 1),
                          st.binary(max_size=300)), max_size=20),
       st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_frames_survive_any_chunking(frames: list[tuple[FrameType, int, bytes]],
                                     cuts: list[int]) -> None:
    wire = b"".join(encode_frame(kind, stream, payload) for kind, stream, payload in frames)
    parser = FrameParser()
    parsed = []
    offset = 0
    for index in range(len(wire)):
        size = cuts[index % len(cuts)]
        parsed += parser.feed(wire[offset : offset + size])
        offset += size
        if offset >= len(wire):
            break
    assert [(f.kind, f.stream, f.payload) for f in parsed] == frames


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.booleans())
def test_garbage_only_ever_raises_mux_error(data: bytes, client: bool) -> None:
    connection = MuxConnection(client, window=64)
    if client:
        connection.open_stream("h", 1)
    with contextlib.suppress(MuxError):
        connection.receive_data(data)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(list(FrameType)), st.integers(0, 8),
                          st.binary(max_size=12)), max_size=30))
def test_plausible_frame_sequences_only_ever_raise_mux_error(
    frames: list[tuple[FrameType, int, bytes]]
) -> None:
    # Small stream ids and payloads reach the state machine's deeper branches.
    server = MuxConnection(False, window=16)
    for kind, stream, payload in frames:
        try:
            server.receive_data(encode_frame(kind, stream, payload))
        except MuxError:
            return
