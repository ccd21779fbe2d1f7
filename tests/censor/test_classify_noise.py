"""The NoiseSocket, WA and fully-encrypted classifiers on real first bytes."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisewall.censor.classify import fully_encrypted, noisesocket, wa
from noisewall.censor.flowclassifier import FlowClassifier, classify_flow
from noisewall.censor.flowrecord import NEED_MORE, Detection
from noisewall.noise import NoiseSettings, dh_function
from noisewall.noise.stream import Framing, connect
from noisewall.records.endpoint import Endpoint
from tests.censor.capture import first_bytes, in_thread
from tests.noise import nsock_peer

SERVER_KEY = dh_function("25519").generate_keypair()
CLIENT = Endpoint("127.0.0.1", 40000)
SERVER = Endpoint("127.0.0.1", 5222)


async def noisewall_first_bytes(protocol: str, framing: Framing) -> bytes:
    settings_ = NoiseSettings(
        protocol=protocol,
        static=dh_function("25519").generate_keypair(),
        remote_static=SERVER_KEY.public,
    )

    async def client(host: str, port: int) -> object:
        return await connect(host, port, settings_, framing=framing, timeout=5)

    return await first_bytes(client)


@pytest.mark.parametrize(
    "protocol",
    [
        "Noise_XX_25519_AESGCM_SHA256",
        "Noise_IK_25519_AESGCM_SHA256",
        "Noise_NN_448_ChaChaPoly_BLAKE2b",
    ],
)
async def test_noisewall_noisesocket_first_message(protocol: str) -> None:
    data = await noisewall_first_bytes(protocol, "noisesocket")
    result = noisesocket.inspect(data)
    assert isinstance(result, Detection)
    assert result.protocol == "noisesocket"
    assert result.confidence >= 0.99
    assert result.features["negotiation"] == protocol
    record = classify_flow(CLIENT, SERVER, data, data)
    assert record.protocol == "noisesocket"
    # The printable protocol name exempts it from the fully-encrypted rule: by the
    # run of printable bytes (Ex4), or, in a short first message, by their share (Ex3).
    assert not record.fully_encrypted
    assert record.exemption in ("Ex3", "Ex4")


async def test_noiseprotocol_peer_first_message() -> None:
    def client(host: str, port: int) -> object:
        return nsock_peer.connect(host, port, protocol="Noise_NN_25519_AESGCM_SHA256", timeout=5)

    data = await first_bytes(in_thread(client))
    result = noisesocket.inspect(data)
    assert isinstance(result, Detection) and result.protocol == "noisesocket"
    assert classify_flow(CLIENT, SERVER, data, data).protocol == "noisesocket"


async def test_noisewall_wa_first_message() -> None:
    data = await noisewall_first_bytes("Noise_XX_25519_AESGCM_SHA256", "wa")
    assert data[:2] == b"WA"
    result = wa.inspect(data)
    assert isinstance(result, Detection)
    assert result.protocol == "wa"
    assert result.features == {"version": "5.2", "first_frame_len": 32}
    record = classify_flow(CLIENT, SERVER, data, data)
    assert record.protocol == "wa"
    # "WA" + version, then an ephemeral key: looks random but starts with 2 printable bytes.
    assert record.popcount is not None


def test_split_first_message_needs_more_then_decides() -> None:
    frame = (11).to_bytes(2, "big") + b"NoiseSocket" + (48).to_bytes(2, "big") + os.urandom(48)
    for cut in range(len(frame)):
        assert noisesocket.inspect(frame[:cut]) is NEED_MORE
    assert isinstance(noisesocket.inspect(frame), Detection)
    assert noisesocket.inspect(frame + b"x") is None  # Alice waits after her first frame


def test_a_begun_first_flight_is_waited_for_then_decided_on_what_arrived() -> None:
    # Time is the caller's: these are plain numbers, no clock runs.
    ends = Endpoint("10.0.0.1", 1000), Endpoint("10.0.0.2", 443)
    first = (11).to_bytes(2, "big") + b"NoiseSocket" + (48).to_bytes(2, "big") + os.urandom(48)
    idle = FlowClassifier(*ends, first_flight_wait=10.0)
    assert idle.deadline(opened=100.0, quiet=2.0) == 102.0  # nothing sent: the quiet timeout
    paused = FlowClassifier(*ends, first_flight_wait=10.0)
    assert paused.feed_client(first[:1], now=100.5) is None
    assert paused.deadline(opened=100.0, quiet=2.0) == 110.5  # 10 s from the first byte
    record = paused.feed_client(first[1:], now=103.0)  # after a 2.5 s pause
    assert record is not None and record.protocol == "noisesocket"
    stalled = FlowClassifier(*ends, first_flight_wait=10.0)
    stalled.feed_client(first[:1], now=100.5)
    assert stalled.finish().protocol == "unknown"  # past the deadline: decided on what is there
    # A random first segment that happens to parse as the start of a NoiseSocket
    # message (a tunnel's) starts no flight worth waiting for.
    tunnel = FlowClassifier(*ends, first_flight_wait=10.0)
    looks_random = (16).to_bytes(2, "big") + bytes.fromhex("8f3a5cc1e7209b4d6e11f0a2b3c4d5e6")
    segment = looks_random + (200).to_bytes(2, "big") + b"\x5a"
    assert tunnel.feed_client(segment, now=100.5) is None
    assert tunnel.deadline(opened=100.0, quiet=2.0) == 102.0


def test_random_bytes_are_flagged_fully_encrypted() -> None:
    rng = random.Random(7)
    flagged = 0
    for _ in range(500):
        data = rng.randbytes(rng.randint(64, 1400))
        record = classify_flow(CLIENT, SERVER, data, data)
        flagged += record.fully_encrypted
        assert record.protocol in ("unknown", "noisesocket")
    assert flagged >= 490


def _unprintable(count: int) -> bytes:
    """Random bytes none of which is printable ASCII (popcount near 4)."""
    rng = random.Random(count)
    pool = [b for b in range(256) if not 0x20 <= b < 0x7F]
    return bytes(rng.choice(pool) for _ in range(count))


@pytest.mark.parametrize(
    ("data", "exemption"),
    [
        (b"\x00" * 300, "Ex1"),  # low entropy: popcount 0
        (b"\xff" * 300, "Ex1"),  # high entropy side: popcount 8
        (b"SSH-2.0-" + bytes(range(128, 256)) * 2, "Ex2"),  # first six printable
        (b"\x01\x02" + b"hello, world! " * 20, "Ex3"),  # mostly printable
        (_unprintable(200) + b"A" * 25 + _unprintable(20), "Ex4"),  # a 25-byte printable run
        (b"\x16\x03\x01" + _unprintable(300), "Ex5"),
        (b"POST " + _unprintable(300), "Ex5"),
    ],
)
def test_each_exemption_is_named(data: bytes, exemption: str) -> None:
    verdict = fully_encrypted.evaluate(data)
    assert verdict is not None
    assert (verdict.flagged, verdict.exemption) == (False, exemption)
    assert fully_encrypted.inspect(data) is None


def test_popcount_bounds_match_the_paper() -> None:
    low = bytes([0b0000_0111]) * 50  # 3.0 bits per byte, not printable
    assert fully_encrypted.evaluate(low) == fully_encrypted.FullyEncryptedVerdict(False, "Ex1", 3.0)
    assert fully_encrypted.popcount_average(bytes(range(256))) == 4.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_classifiers_never_raise(data: bytes) -> None:
    for inspect in (noisesocket.inspect, wa.inspect, fully_encrypted.inspect):
        result = inspect(data)
        assert result is None or result is NEED_MORE or isinstance(result, Detection)
