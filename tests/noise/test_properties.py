"""Property tests: the stream parsers, NoiseSocket payloads, HMAC/HKDF and whole handshakes.

The parsers face a hostile network, so they are fed arbitrary bytes in arbitrary
chunks; all they may do is return events or raise a :class:`NoiseError`, and every
call must return promptly. A valid stream must parse the same however TCP splits it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from noisewall.noise.cipherstate import MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN
from noisewall.noise.connection import NoiseConnection
from noisewall.noise.dh import DH_FUNCTIONS, KeyPair
from noisewall.noise.errors import (
    ConnectionClosedError,
    FramingError,
    MessageTooLongError,
    NoiseError,
)
from noisewall.noise.events import (
    Event,
    HandshakeComplete,
    HandshakePayload,
    MessageReceived,
    PeerClosed,
    ProtocolSwitched,
)
from noisewall.noise.handshakestate import HandshakeState
from noisewall.noise.hashes import HASH_FUNCTIONS
from noisewall.noise.noisesocket import (
    BODY_LEN_SIZE,
    NoiseSocketConnection,
    decode_payload,
    encode_payload,
)
from noisewall.noise.protocol import parse_protocol_name
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.wa import WAConnection

X25519 = DH_FUNCTIONS["25519"]
XX = "Noise_XX_25519_AESGCM_SHA256"
XX_CHACHA = "Noise_XX_25519_ChaChaPoly_SHA256"
IK = "Noise_IK_25519_AESGCM_SHA256"
NN = "Noise_NN_25519_ChaChaPoly_BLAKE2s"
XX_FALLBACK = "Noise_XXfallback_25519_AESGCM_SHA256"

# Fixed keys: the parsers' behaviour must not depend on them, and fixed ephemerals
# make a session reproducible so a recorded stream can be replayed to a fresh party.
SERVER_STATIC = X25519.keypair_from_private(bytes(range(1, 33)))
CLIENT_STATIC = X25519.keypair_from_private(bytes(range(33, 65)))
SERVER_EPHEMERAL = X25519.keypair_from_private(bytes(range(65, 97)))
CLIENT_EPHEMERAL = X25519.keypair_from_private(bytes(range(97, 129)))

ALL_EVENT_TYPES = (
    HandshakePayload,
    HandshakeComplete,
    MessageReceived,
    ProtocolSwitched,
    PeerClosed,
)

PARSER_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- helpers ---------------------------------------------------------------


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail with TimeoutError if the block runs longer than ``seconds`` (a hang detector)."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"call did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_connection(framing: str, initiator: bool, settings: NoiseSettings) -> NoiseConnection:
    if framing == "noisesocket":
        return NoiseSocketConnection(initiator, settings)
    return WAConnection(initiator, settings)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (clipped and deduplicated); no chunk is empty."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def feed_hostile(connection: NoiseConnection, chunks: list[bytes]) -> list[Event]:
    """Feed chunks then EOF; only NoiseError may escape, and a failed connection stays dead."""
    events: list[Event] = []
    for chunk in [*chunks, b""]:
        try:
            with time_limit(2.0):
                result = connection.receive_data(chunk)
                # Answer as the stream adapter would, to get deeper into the handshake.
                if connection.needs_write:
                    result += connection.send_handshake(b"reply")
        except NoiseError:
            # Once failed, the connection refuses all further input.
            with pytest.raises(ConnectionClosedError):
                connection.receive_data(b"more")
            return events
        assert isinstance(result, list)
        assert all(isinstance(event, ALL_EVENT_TYPES) for event in result)
        events.extend(result)
        assert isinstance(connection.data_to_send(), bytes)
    return events


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def u24(value: int) -> bytes:
    return value.to_bytes(3, "big")


@dataclass
class Party:
    """One side of a recorded session: its settings and what it wrote when."""

    connection: NoiseConnection
    settings: NoiseSettings
    handshake_payloads: list[bytes]
    bodies: list[bytes]
    opening: bytes | None = None  # the initiator's first handshake payload
    replies: list[bytes | None] = field(default_factory=list)  # payload written after delivery k
    received: list[bytes] = field(default_factory=list)  # delivery k, as bytes
    events: list[Event] = field(default_factory=list)
    transports_sent: bool = False


def session_settings(protocol: str, padding: int) -> tuple[NoiseSettings, NoiseSettings]:
    pattern = parse_protocol_name(protocol).pattern
    initiator = NoiseSettings(
        protocol=protocol,
        static=CLIENT_STATIC,
        remote_static=SERVER_STATIC.public if "s" in pattern.responder_pre else None,
        padding=padding,
        ephemeral=CLIENT_EPHEMERAL,
    )
    responder = NoiseSettings(
        protocol=protocol, static=SERVER_STATIC, padding=padding, ephemeral=SERVER_EPHEMERAL
    )
    return initiator, responder


def converse(initiator: Party, responder: Party) -> None:
    """Run a whole session between two parties, recording every delivery and reply.

    A party that completes its handshake sends its transport bodies at once, in the
    same delivery as its last handshake message (as a real peer would).
    """

    def deliver(sender: Party, receiver: Party) -> None:
        data = sender.connection.data_to_send()
        if not data:
            return
        receiver.received.append(data)
        receiver.events.extend(receiver.connection.receive_data(data))
        receiver.replies.append(None)

    def flush_transports(party: Party) -> None:
        if party.connection.handshake_complete and not party.transports_sent:
            party.transports_sent = True
            for body in party.bodies:
                party.connection.send_message(body)

    for _ in range(10):
        for sender, receiver in ((initiator, responder), (responder, initiator)):
            if sender.connection.needs_write:
                payload = sender.handshake_payloads.pop(0) if sender.handshake_payloads else b""
                if sender.replies:
                    sender.replies[-1] = payload
                else:
                    assert sender is initiator
                    sender.opening = payload
                sender.events.extend(sender.connection.send_handshake(payload))
                flush_transports(sender)
                deliver(sender, receiver)
        if initiator.connection.handshake_complete and responder.connection.handshake_complete:
            break
    for sender, receiver in ((initiator, responder), (responder, initiator)):
        flush_transports(sender)
        deliver(sender, receiver)
    assert initiator.connection.handshake_complete
    assert responder.connection.handshake_complete


def established_pair(
    framing: str, protocol: str = XX, padding: int = 0
) -> tuple[NoiseConnection, NoiseConnection]:
    initiator_settings, responder_settings = session_settings(protocol, padding)
    initiator = Party(
        make_connection(framing, True, initiator_settings), initiator_settings, [], []
    )
    responder = Party(
        make_connection(framing, False, responder_settings), responder_settings, [], []
    )
    converse(initiator, responder)
    return initiator.connection, responder.connection


# --- strategies ------------------------------------------------------------

cut_points = st.lists(st.integers(min_value=0, max_value=4000), max_size=25)
STALE_KEY = X25519.keypair_from_private(bytes(range(129, 161))).public

NEGOTIATION_SAMPLES = [
    b"",
    XX.encode(),
    IK.encode(),
    XX_CHACHA.encode(),
    XX_FALLBACK.encode(),
    NN.encode(),
    b"\x01\x02",
    b"Noise_ZZ_25519_AESGCM_SHA256",
    b"\xff\xfe\xfd",
    b"go away",
]


@st.composite
def noisesocket_ish(draw: st.DrawFn) -> bytes:
    """Bytes that are partly well-formed NoiseSocket frames, so parsing gets deep."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 4))):
        size = draw(st.sampled_from([0, 16, 31, 32, 48, 64, 96, 112]) | st.integers(0, 300))
        message = draw(st.binary(min_size=size, max_size=size))
        if draw(st.booleans()):
            negotiation = draw(st.sampled_from(NEGOTIATION_SAMPLES) | st.binary(max_size=30))
            parts.append(u16(len(negotiation)) + negotiation + u16(len(message)) + message)
        else:
            parts.append(u16(len(message)) + message)
    parts.append(draw(st.binary(max_size=200)))
    return b"".join(parts)


@st.composite
def wa_ish(draw: st.DrawFn) -> bytes:
    """Bytes that are partly well-formed WA frames (after an optional header)."""
    parts: list[bytes] = []
    if draw(st.integers(0, 4)):
        parts.append(b"WA" + draw(st.binary(min_size=2, max_size=2)))
    for _ in range(draw(st.integers(0, 4))):
        size = draw(st.sampled_from([0, 16, 31, 32, 48, 64, 96, 112]) | st.integers(0, 300))
        message = draw(st.binary(min_size=size, max_size=size))
        length = draw(st.sampled_from([len(message), len(message), 0xFFFFFF, 65536]))
        parts.append(u24(length) + message)
    parts.append(draw(st.binary(max_size=200)))
    return b"".join(parts)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes overwritten, maybe truncated, then some hostile tail."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.none() | st.integers(0, len(data)))
    if cut is not None:
        del data[cut:]
    tail = draw(st.just(b"") | st.binary(max_size=200) | noisesocket_ish() | wa_ish())
    return bytes(data) + tail


@dataclass(frozen=True)
class Scenario:
    """An initiator and a responder configuration; a hostile peer may garble their talk."""

    name: str
    initiator: NoiseSettings
    responder: NoiseSettings


def scenarios() -> list[Scenario]:
    base_client = NoiseSettings(static=CLIENT_STATIC, ephemeral=CLIENT_EPHEMERAL)
    base_server = NoiseSettings(static=SERVER_STATIC, ephemeral=SERVER_EPHEMERAL)

    def client(protocol: str, **options: Any) -> NoiseSettings:
        return replace(base_client, protocol=protocol, **options)

    def server(protocol: str, **options: Any) -> NoiseSettings:
        return replace(base_server, protocol=protocol, **options)

    pipes = {IK: XX_FALLBACK}
    return [
        Scenario("xx", client(XX), server(XX)),
        Scenario(
            "ik",
            client(IK, remote_static=SERVER_STATIC.public, accept=[XX_FALLBACK]),
            server(IK, fallbacks=pipes),
        ),
        Scenario(
            "ik-stale",
            client(IK, remote_static=STALE_KEY, accept=[XX_FALLBACK]),
            server(IK, fallbacks=pipes),
        ),
        Scenario(
            "retry",
            client(XX, accept=[XX_CHACHA]),
            server(XX_CHACHA, retry_with=XX_CHACHA),
        ),
        Scenario("reject", client(XX), server(XX_CHACHA)),
        Scenario("nn-padded", client(NN, padding=16), server(NN, padding=16)),
        Scenario(
            "custom-negotiation",
            client(XX, negotiation_data=b"\x01\x02"),
            server(XX, negotiation_data=b"\x01\x02"),
        ),
    ]


SCENARIOS = scenarios()


@cache
def opening_and_response(framing: str, index: int) -> tuple[bytes, bytes]:
    """The initiator's first flight and the responder's answer to it, for one scenario."""
    scenario = SCENARIOS[index]
    initiator = make_connection(framing, True, scenario.initiator)
    initiator.send_handshake(b"opening")
    opening = initiator.data_to_send()
    responder = make_connection(framing, False, scenario.responder)
    try:
        responder.receive_data(opening)
        if responder.needs_write:
            responder.send_handshake(b"answer")
    except NoiseError:
        pass  # WA has no negotiation: a mismatched configuration just fails
    return opening, responder.data_to_send()


def hostile_for(base: bytes) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=3000) | noisesocket_ish() | wa_ish() | mutated(base)


# --- parsers under hostile input -----------------------------------------------


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
@PARSER_SETTINGS
@given(data=st.data(), cuts=cut_points, index=st.integers(0, len(SCENARIOS) - 1))
def test_responder_parser_survives_arbitrary_bytes(
    framing: str, data: st.DataObject, cuts: list[int], index: int
) -> None:
    opening, _ = opening_and_response(framing, index)
    stream = data.draw(hostile_for(opening), label="stream")
    connection = make_connection(framing, False, SCENARIOS[index].responder)
    feed_hostile(connection, split_at(stream, cuts))


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
@PARSER_SETTINGS
@given(data=st.data(), cuts=cut_points, index=st.integers(0, len(SCENARIOS) - 1))
def test_initiator_awaiting_response_survives_arbitrary_bytes(
    framing: str, data: st.DataObject, cuts: list[int], index: int
) -> None:
    opening, response = opening_and_response(framing, index)
    stream = data.draw(hostile_for(response), label="stream")
    initiator = make_connection(framing, True, SCENARIOS[index].initiator)
    initiator.send_handshake(b"opening")
    assert initiator.data_to_send() == opening  # same keys, same bytes: the response fits
    feed_hostile(initiator, split_at(stream, cuts))


@st.composite
def transport_stream(draw: st.DrawFn) -> list[bytes | str]:
    """Items: raw bytes, or "real" for a genuine transport frame from the peer."""
    items: list[bytes | str] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["real", "frame16", "frame24", "raw"]))
        if kind == "real":
            items.append("real")
        elif kind == "frame16":
            body = draw(st.binary(max_size=200))
            items.append(u16(len(body)) + body)
        elif kind == "frame24":
            body = draw(st.binary(max_size=200))
            items.append(u24(len(body)) + body)
        else:
            items.append(draw(st.binary(max_size=600)))
    return items


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
@PARSER_SETTINGS
@given(
    items=transport_stream(),
    cuts=cut_points,
    to_initiator=st.booleans(),
    bodies=st.lists(st.binary(max_size=100), min_size=1, max_size=3),
)
def test_transport_parser_survives_arbitrary_bytes(
    framing: str, items: list[bytes | str], cuts: list[int], to_initiator: bool, bodies: list[bytes]
) -> None:
    initiator, responder = established_pair(framing)
    sender, receiver = (responder, initiator) if to_initiator else (initiator, responder)
    stream = bytearray()
    real_frames = 0
    for item in items:
        if isinstance(item, str):
            sender.send_message(bodies[real_frames % len(bodies)])
            real_frames += 1
            stream += sender.data_to_send()
        else:
            stream += item
    events = feed_hostile(receiver, split_at(bytes(stream), cuts))
    received = [event.body for event in events if isinstance(event, MessageReceived)]
    # Whatever was parsed before any error must be a prefix of the genuine messages.
    sent = [bodies[index % len(bodies)] for index in range(real_frames)]
    assert received == sent[: len(received)]
    if all(isinstance(item, str) for item in items):
        assert received == sent
        assert events[-1] == PeerClosed()


# --- a valid stream parses the same however it is split ------------------------


def record_session(
    framing: str, protocol: str, padding: int, payloads: list[bytes], bodies: list[bytes]
) -> tuple[Party, Party]:
    initiator_settings, responder_settings = session_settings(protocol, padding)
    initiator = Party(
        make_connection(framing, True, initiator_settings),
        initiator_settings,
        list(payloads[0::2]),
        list(bodies),
    )
    responder = Party(
        make_connection(framing, False, responder_settings),
        responder_settings,
        list(payloads[1::2]),
        list(reversed(bodies)),
    )
    converse(initiator, responder)
    return initiator, responder


def replay(
    framing: str, party: Party, initiator: bool, split: Callable[[bytes], list[bytes]]
) -> list[Event]:
    """Feed a party's recorded deliveries to a fresh twin, split by ``split``."""
    twin = make_connection(framing, initiator, party.settings)
    events: list[Event] = []
    if initiator:
        assert party.opening is not None
        events.extend(twin.send_handshake(party.opening))
    for delivery, reply in zip(party.received, party.replies, strict=True):
        for chunk in split(delivery):
            events.extend(twin.receive_data(chunk))
        if reply is not None:
            assert twin.needs_write
            events.extend(twin.send_handshake(reply))
        else:
            assert not twin.needs_write
        twin.data_to_send()
    assert twin.handshake_complete
    events.extend(twin.receive_data(b""))
    return events


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
@pytest.mark.parametrize("protocol", [XX, IK, NN])
@settings(max_examples=40, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=3, max_size=3),
    bodies=st.lists(st.binary(max_size=2000), min_size=1, max_size=6),
    padding=st.sampled_from([0, 1, 16, 1000]),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=40),
)
def test_valid_stream_parses_the_same_however_split(
    framing: str,
    protocol: str,
    payloads: list[bytes],
    bodies: list[bytes],
    padding: int,
    cuts: list[int],
) -> None:
    if framing == "wa":
        padding = 0  # WA has no padding
    initiator, responder = record_session(framing, protocol, padding, payloads, bodies)
    for party, is_initiator in ((initiator, True), (responder, False)):
        whole = replay(framing, party, is_initiator, lambda data: [data])
        pieces = replay(framing, party, is_initiator, lambda data: split_at(data, cuts))
        bytewise = replay(
            framing, party, is_initiator, lambda data: [data[i : i + 1] for i in range(len(data))]
        )
        assert pieces == whole
        assert bytewise == whole
        # The replay reproduces what the live party saw, and the bodies arrive intact.
        assert whole == [*party.events, PeerClosed()]
        received = [event.body for event in whole if isinstance(event, MessageReceived)]
        expected = list(reversed(bodies)) if is_initiator else bodies
        assert received == expected


# --- NoiseSocket encrypted payloads -------------------------------------------

MAX_BODY = MAX_PLAINTEXT_LEN - BODY_LEN_SIZE


@settings(max_examples=150, deadline=None)
@given(
    body=st.binary(max_size=3000)
    | st.integers(MAX_BODY - 3000, MAX_BODY).map(lambda n: bytes([n % 251]) * n),
    padding=st.integers(0, 70000) | st.sampled_from([0, 1, 2, 16, 256, 65535]),
)
def test_payload_round_trip(body: bytes, padding: int) -> None:
    plaintext = encode_payload(body, padding)
    assert decode_payload(plaintext) == body
    assert int.from_bytes(plaintext[:2], "big") == len(body)
    assert plaintext[2 : 2 + len(body)] == body
    assert set(plaintext[2 + len(body) :]) <= {0}
    assert len(plaintext) <= MAX_PLAINTEXT_LEN
    padded = len(plaintext) - BODY_LEN_SIZE
    if padding <= 0:
        assert padded == len(body)
    else:
        # Padded to a multiple (an empty body still fills a block), unless capped.
        assert padded >= max(len(body), min(padding, MAX_BODY))
        assert padded % padding == 0 or padded == MAX_BODY


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000)
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=300)).map(lambda t: u16(t[0]) + t[1])
)
def test_decode_payload_of_arbitrary_bytes(data: bytes) -> None:
    try:
        body = decode_payload(data)
    except FramingError:
        assert len(data) < 2 or int.from_bytes(data[:2], "big") > len(data) - 2
        return
    assert body == data[2 : 2 + int.from_bytes(data[:2], "big")]


def test_encode_payload_rejects_oversize_body() -> None:
    with pytest.raises(MessageTooLongError):
        encode_payload(bytes(MAX_BODY + 1))
    assert decode_payload(encode_payload(bytes(MAX_BODY), 16)) == bytes(MAX_BODY)


@settings(max_examples=30, deadline=None)
@given(padding=st.integers(0, 65535))
@example(padding=65437)
@example(padding=65438)
@example(padding=65535)
def test_every_accepted_padding_still_carries_messages(padding: int) -> None:
    # NoiseSettings accepts paddings 0..65535; each must leave a working connection:
    # a handshake with empty payloads, then a one-byte body (the stream adapter's
    # smallest fragment).
    initiator, responder = established_pair("noisesocket", XX, padding)
    assert initiator.max_body >= 1
    initiator.send_message(b"x")
    frame = initiator.data_to_send()
    assert len(frame) <= 2 + MAX_MESSAGE_LEN
    assert responder.receive_data(frame) == [MessageReceived(b"x")]


# --- HMAC and HKDF against the standard library ---------------------------------

HASH_NAMES = ["SHA256", "SHA512", "BLAKE2s", "BLAKE2b"]
STDLIB_HASHES: dict[str, Callable[..., object]] = {
    "SHA256": hashlib.sha256,
    "SHA512": hashlib.sha512,
    "BLAKE2s": hashlib.blake2s,
    "BLAKE2b": hashlib.blake2b,
}


def reference_hkdf(name: str, chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    """HKDF exactly as spec section 4.3 writes it, on stdlib HMAC."""
    digest = STDLIB_HASHES[name]
    temp_key = hmac.digest(chaining_key, ikm, digest)  # type: ignore[arg-type]
    output1 = hmac.digest(temp_key, b"\x01", digest)  # type: ignore[arg-type]
    output2 = hmac.digest(temp_key, output1 + b"\x02", digest)  # type: ignore[arg-type]
    if outputs == 2:
        return [output1, output2]
    output3 = hmac.digest(temp_key, output2 + b"\x03", digest)  # type: ignore[arg-type]
    return [output1, output2, output3]


def test_hash_table_constants() -> None:
    assert set(HASH_FUNCTIONS) == set(HASH_NAMES)
    for name, function in HASH_FUNCTIONS.items():
        reference = STDLIB_HASHES[name]()
        assert function.hashlen == reference.digest_size  # type: ignore[attr-defined]
        assert function.blocklen == reference.block_size  # type: ignore[attr-defined]
        assert function.hash(b"abc") == STDLIB_HASHES[name](b"abc").digest()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", HASH_NAMES)
@settings(max_examples=80, deadline=None)
@given(
    key=st.binary(max_size=300)
    | st.sampled_from([0, 63, 64, 65, 127, 128, 129, 1000]).flatmap(
        lambda n: st.binary(min_size=n, max_size=n)
    ),
    data=st.binary(max_size=500),
)
def test_hmac_matches_stdlib(name: str, key: bytes, data: bytes) -> None:
    expected = hmac.digest(key, data, STDLIB_HASHES[name])  # type: ignore[arg-type]
    function = HASH_FUNCTIONS[name]
    assert function.hmac(key, data) == expected
    # The cached padded-key states must not leak between calls.
    assert function.hmac(key, data) == expected
    assert function.hmac(key + b"x", data) == hmac.digest(key + b"x", data, STDLIB_HASHES[name])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", HASH_NAMES)
@settings(max_examples=60, deadline=None)
@given(
    chaining_key=st.binary(min_size=32, max_size=64),
    ikm=st.sampled_from([0, 32, 56, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    outputs=st.sampled_from([2, 3]),
)
def test_hkdf_matches_spec(name: str, chaining_key: bytes, ikm: bytes, outputs: int) -> None:
    function = HASH_FUNCTIONS[name]
    chaining_key = chaining_key[: function.hashlen].ljust(function.hashlen, b"\x00")
    result = function.hkdf(chaining_key, ikm, outputs)
    assert result == reference_hkdf(name, chaining_key, ikm, outputs)
    assert all(len(output) == function.hashlen for output in result)


# --- whole handshakes for a sample of protocols ------------------------------------

PATTERNS = [
    "NN",
    "XX",
    "IK",
    "NK",
    "KK",
    "IX",
    "N",
    "K",
    "X",
    "XXpsk3",
    "NNpsk0",
    "IKpsk2",
    "Npsk0",
    "XK1",
    "I1K1",
    "X1X1",
    "XXfallback",
    "XXfallback+psk0",
]

protocol_names = st.builds(
    "Noise_{}_{}_{}_{}".format,
    st.sampled_from(PATTERNS),
    st.sampled_from(["25519", "448"]),
    st.sampled_from(["AESGCM", "ChaChaPoly"]),
    st.sampled_from(HASH_NAMES),
)


@dataclass
class Pair:
    initiator: HandshakeState
    responder: HandshakeState
    initiator_static: KeyPair
    responder_static: KeyPair


def make_handshake_pair(name: str, prologue: bytes, psk_seed: bytes) -> Pair:
    protocol = parse_protocol_name(name)
    pattern = protocol.pattern
    dh = protocol.dh
    statics = dh.generate_keypair(), dh.generate_keypair()
    ephemerals = dh.generate_keypair(), dh.generate_keypair()
    psks = [hashlib.sha256(psk_seed + bytes([index])).digest() for index in range(8)]
    psks = psks[: pattern.psk_count]
    states = []
    for role, (own_pre, remote_pre) in enumerate(
        (
            (pattern.initiator_pre, pattern.responder_pre),
            (pattern.responder_pre, pattern.initiator_pre),
        )
    ):
        other = 1 - role
        states.append(
            HandshakeState(
                protocol,
                initiator=role == 0,
                prologue=prologue,
                s=statics[role] if pattern.uses_static(role == 0) else None,
                e=ephemerals[role] if "e" in own_pre else None,
                rs=statics[other].public if "s" in remote_pre else None,
                re=ephemerals[other].public if "e" in remote_pre else None,
                psks=psks,
            )
        )
    return Pair(states[0], states[1], statics[0], statics[1])


def learns_static(
    pattern_pre: tuple[str, ...], messages: tuple[tuple[str, ...], ...], parity: int
) -> bool:
    """True if the party sending messages of ``parity`` reveals its static key."""
    return "s" in pattern_pre or any("s" in m for m in messages[parity::2])


@settings(max_examples=40, deadline=None)
@given(
    name=protocol_names,
    prologue=st.binary(max_size=50),
    psk_seed=st.binary(max_size=8),
    payloads=st.lists(st.binary(max_size=500), min_size=4, max_size=4),
    bodies=st.lists(st.binary(max_size=2000), min_size=1, max_size=4),
)
def test_handshake_and_transport_round_trip(
    name: str, prologue: bytes, psk_seed: bytes, payloads: list[bytes], bodies: list[bytes]
) -> None:
    pair = make_handshake_pair(name, prologue, psk_seed)
    pattern = pair.initiator.protocol.pattern
    for index in range(len(pattern.messages)):
        writer, reader = (
            (pair.initiator, pair.responder) if index % 2 == 0 else (pair.responder, pair.initiator)
        )
        assert writer.writes_next and not reader.writes_next
        message = writer.write_message(payloads[index])
        assert len(message) <= MAX_MESSAGE_LEN
        assert reader.read_message(message) == payloads[index]
    assert pair.initiator.complete and pair.responder.complete
    assert pair.initiator.handshake_hash == pair.responder.handshake_hash
    i_transport, r_transport = pair.initiator.transport(), pair.responder.transport()
    assert i_transport.handshake_hash == r_transport.handshake_hash
    if learns_static(pattern.responder_pre, pattern.messages, 1):
        assert i_transport.remote_static == pair.responder_static.public
    else:
        assert i_transport.remote_static is None
    if learns_static(pattern.initiator_pre, pattern.messages, 0):
        assert r_transport.remote_static == pair.initiator_static.public
    else:
        assert r_transport.remote_static is None
    assert i_transport.send is not None and r_transport.receive is not None
    for body in bodies:
        ciphertext = i_transport.send.encrypt(body)
        assert len(ciphertext) == len(body) + 16
        assert r_transport.receive.decrypt(ciphertext) == body
    if pattern.one_way:
        assert i_transport.receive is None and r_transport.send is None
    else:
        assert r_transport.send is not None and i_transport.receive is not None
        for body in bodies:
            assert i_transport.receive.decrypt(r_transport.send.encrypt(body)) == body
    assert i_transport.send.n == r_transport.receive.n == len(bodies)
