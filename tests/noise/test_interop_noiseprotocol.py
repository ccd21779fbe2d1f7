"""Raw Noise interop with the independent ``noiseprotocol`` package, byte for byte.

For each protocol and each role, noisewall's :class:`HandshakeState` talks to a
``noiseprotocol`` :class:`NoiseConnection` playing the other role. With fixed
ephemeral and static keys, a *shadow* ``noiseprotocol`` connection plays the
same role as noisewall with the same inputs: every handshake and transport
message noisewall writes must equal the shadow's bytes, and all handshake hashes
must match. A second run uses fresh ephemerals, so each side only reads the
other's real messages.

``noiseprotocol`` is only fed valid inputs (it has known spec bugs, e.g. it lets
transport messages exceed 65535 bytes).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest
from noise.connection import Keypair, NoiseConnection

from noisewall.noise import HandshakeState, KeyPair, dh_function
from noisewall.noise.cipherstate import CipherState

pytestmark = pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")

MAX_MESSAGE_LEN = 65535
TAGLEN = 16
X25519 = dh_function("25519")

# Pattern -> (initiator knows the responder's static in advance?,
#             initiator has a static?, responder has a static?)
PATTERNS: dict[str, tuple[bool, bool, bool]] = {
    "NN": (False, False, False),
    "NK": (True, False, True),
    "XX": (False, True, True),
    "IK": (True, True, True),
}
MAIN_SUITE = "25519_AESGCM_SHA256"
ALL_SUITES = [
    "25519_AESGCM_SHA256",
    "25519_ChaChaPoly_SHA256",
    "25519_AESGCM_BLAKE2s",
    "25519_ChaChaPoly_BLAKE2s",
    "25519_AESGCM_SHA512",
    "25519_ChaChaPoly_BLAKE2b",
]
# The brief: all four patterns on the main suite, plus ChaChaPoly/BLAKE2s (and more)
# at least for XX. Running every pattern on every suite is cheap, so do that.
PROTOCOLS = [f"Noise_{p}_{suite}" for p in PATTERNS for suite in ALL_SUITES]
ROLES = ["noisewall-initiator", "noisewall-responder"]


def _private(label: str) -> bytes:
    """A fixed, distinct 32-byte X25519 private key per label."""
    return hashlib.sha256(b"noisewall interop " + label.encode()).digest()


@dataclass
class Keys:
    init_s: bytes | None = None
    resp_s: bytes | None = None
    init_e: bytes | None = None
    resp_e: bytes | None = None

    @classmethod
    def for_pattern(cls, pattern: str, fixed_ephemeral: bool) -> Keys:
        _, init_static, resp_static = PATTERNS[pattern]
        return cls(
            init_s=_private("init s") if init_static else None,
            resp_s=_private("resp s") if resp_static else None,
            init_e=_private("init e") if fixed_ephemeral else None,
            resp_e=_private("resp e") if fixed_ephemeral else None,
        )


def _public(private: bytes) -> bytes:
    return X25519.keypair_from_private(private).public


def _pair(private: bytes | None) -> KeyPair | None:
    return None if private is None else X25519.keypair_from_private(private)


def make_noisewall(name: str, initiator: bool, keys: Keys, prologue: bytes) -> HandshakeState:
    pattern = name.split("_")[1]
    needs_rs = PATTERNS[pattern][0] and initiator
    return HandshakeState(
        name,
        initiator=initiator,
        prologue=prologue,
        s=_pair(keys.init_s if initiator else keys.resp_s),
        e=_pair(keys.init_e if initiator else keys.resp_e),
        rs=_public(keys.resp_s) if needs_rs and keys.resp_s else None,
    )


def make_noiseprotocol(name: str, initiator: bool, keys: Keys, prologue: bytes) -> NoiseConnection:
    pattern = name.split("_")[1]
    conn = NoiseConnection.from_name(name.encode())
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(prologue)
    static = keys.init_s if initiator else keys.resp_s
    ephemeral = keys.init_e if initiator else keys.resp_e
    if static is not None:
        conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    if ephemeral is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    if PATTERNS[pattern][0] and initiator:
        assert keys.resp_s is not None
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, _public(keys.resp_s))
    conn.start_handshake()
    return conn


@dataclass
class Run:
    """What one handshake + transport exchange produced, for the assertions."""

    handshake_messages: list[bytes] = field(default_factory=list)
    payloads_read: list[bytes] = field(default_factory=list)
    transport_messages: list[bytes] = field(default_factory=list)


def handshake_payloads(name: str) -> list[bytes]:
    """Distinct non-empty payloads, one per handshake message."""
    count = 3 if "_XX_" in name else 2
    return [f"hs payload {i} of {name}".encode() * (i + 1) for i in range(count)]


TRANSPORT_PLAINTEXTS = [
    b"",
    b"hello from the initiator side",
    bytes(range(256)) * 4,
    b"\x00" * (MAX_MESSAGE_LEN - TAGLEN),  # the largest valid transport plaintext
]


def run_exchange(
    name: str,
    noisewall_initiator: bool,
    keys: Keys,
    prologue: bytes,
    shadow: bool,
) -> Run:
    """Handshake + transport between noisewall and noiseprotocol (the peer).

    With ``shadow``, a second noiseprotocol connection plays noisewall's role
    with the same keys, and every message noisewall writes must equal its bytes.
    """
    ours = make_noisewall(name, noisewall_initiator, keys, prologue)
    peer = make_noiseprotocol(name, not noisewall_initiator, keys, prologue)
    twin = make_noiseprotocol(name, noisewall_initiator, keys, prologue) if shadow else None
    run = Run()
    payloads = handshake_payloads(name)

    for index, payload in enumerate(payloads):
        initiator_writes = index % 2 == 0
        assert not ours.complete
        if initiator_writes == noisewall_initiator:
            assert ours.writes_next
            message = ours.write_message(payload)
            if twin is not None:
                expected = bytes(twin.write_message(payload))
                assert message == expected, f"{name} handshake message {index} differs"
            assert bytes(peer.read_message(message)) == payload
        else:
            assert not ours.writes_next
            message = bytes(peer.write_message(payload))
            got = ours.read_message(message)
            assert got == payload
            run.payloads_read.append(got)
            if twin is not None:
                assert bytes(twin.read_message(message)) == payload
        run.handshake_messages.append(message)

    assert ours.complete
    assert peer.handshake_finished
    transport = ours.transport()
    assert ours.handshake_hash == peer.get_handshake_hash()
    assert transport.handshake_hash == peer.get_handshake_hash()
    if twin is not None:
        assert twin.handshake_finished
        assert twin.get_handshake_hash() == ours.handshake_hash
    if keys.resp_s is not None and noisewall_initiator:
        assert transport.remote_static == _public(keys.resp_s)
    if keys.init_s is not None and not noisewall_initiator:
        assert transport.remote_static == _public(keys.init_s)

    send, receive = transport.send, transport.receive
    assert isinstance(send, CipherState)
    assert isinstance(receive, CipherState)
    for plaintext in TRANSPORT_PLAINTEXTS:
        reply = (plaintext[::-1] + b"!")[: MAX_MESSAGE_LEN - TAGLEN]
        # Initiator -> responder first, then back, whichever side noisewall plays;
        # so the transcript does not depend on the role noisewall takes.
        for message_text, from_initiator in ((plaintext, True), (reply, False)):
            if from_initiator == noisewall_initiator:
                ciphertext = send.encrypt_with_ad(b"", message_text)
                assert len(ciphertext) == len(message_text) + TAGLEN <= MAX_MESSAGE_LEN
                if twin is not None:
                    expected = twin.encrypt(message_text)
                    assert ciphertext == expected, f"{name} transport message differs"
                assert peer.decrypt(ciphertext) == message_text
            else:
                ciphertext = peer.encrypt(message_text)
                assert receive.decrypt_with_ad(b"", ciphertext) == message_text
                if twin is not None:
                    assert twin.decrypt(ciphertext) == message_text
            run.transport_messages.append(ciphertext)
    return run


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", PROTOCOLS)
def test_fixed_keys_byte_for_byte(name: str, role: str) -> None:
    pattern = name.split("_")[1]
    keys = Keys.for_pattern(pattern, fixed_ephemeral=True)
    run_exchange(name, role == ROLES[0], keys, b"interop prologue", shadow=True)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", PROTOCOLS)
def test_fresh_ephemerals(name: str, role: str) -> None:
    pattern = name.split("_")[1]
    keys = Keys.for_pattern(pattern, fixed_ephemeral=False)
    first = run_exchange(name, role == ROLES[0], keys, b"", shadow=False)
    second = run_exchange(name, role == ROLES[0], keys, b"", shadow=False)
    # Fresh ephemerals: the first handshake message (it always carries "e") differs.
    assert first.handshake_messages[0][:32] != second.handshake_messages[0][:32]


@pytest.mark.parametrize("name", [f"Noise_{p}_{MAIN_SUITE}" for p in PATTERNS])
def test_both_roles_give_identical_transcripts(name: str) -> None:
    """With fixed keys, the wire transcript does not depend on who is noisewall."""
    pattern = name.split("_")[1]
    keys = Keys.for_pattern(pattern, fixed_ephemeral=True)
    as_initiator = run_exchange(name, True, keys, b"p", shadow=False)
    as_responder = run_exchange(name, False, keys, b"p", shadow=False)
    assert as_initiator.handshake_messages == as_responder.handshake_messages
    assert as_initiator.transport_messages == as_responder.transport_messages


@pytest.mark.parametrize("role", ROLES)
def test_prologue_mismatch_is_detected(role: str) -> None:
    """Different prologues must make the first encrypted payload fail (both directions)."""
    name = f"Noise_XX_{MAIN_SUITE}"
    keys = Keys.for_pattern("XX", fixed_ephemeral=False)
    noisewall_initiator = role == ROLES[0]
    ours = make_noisewall(name, noisewall_initiator, keys, b"prologue A")
    peer = make_noiseprotocol(name, not noisewall_initiator, keys, b"prologue B")
    if noisewall_initiator:
        peer.read_message(ours.write_message(b""))
        message = bytes(peer.write_message(b""))
        with pytest.raises(Exception, match=r"(?i)decrypt|tag|auth"):
            ours.read_message(message)
    else:
        ours.read_message(bytes(peer.write_message(b"")))
        message = ours.write_message(b"")
        with pytest.raises(Exception) as excinfo:
            peer.read_message(message)
        assert type(excinfo.value).__name__ == "InvalidTag"


@pytest.mark.parametrize("role", ROLES)
def test_largest_handshake_payload(role: str) -> None:
    """A first XX message of exactly 65535 bytes (32-byte e + cleartext payload)."""
    name = f"Noise_XX_{MAIN_SUITE}"
    keys = Keys.for_pattern("XX", fixed_ephemeral=True)
    noisewall_initiator = role == ROLES[0]
    payload = bytes(i % 251 for i in range(MAX_MESSAGE_LEN - 32))
    ours = make_noisewall(name, noisewall_initiator, keys, b"")
    peer = make_noiseprotocol(name, not noisewall_initiator, keys, b"")
    if noisewall_initiator:
        twin = make_noiseprotocol(name, True, keys, b"")
        message = ours.write_message(payload)
        assert len(message) == MAX_MESSAGE_LEN
        assert message == bytes(twin.write_message(payload))
        assert bytes(peer.read_message(message)) == payload
        # and the encrypted second message with the largest payload it can hold
        big = payload[: MAX_MESSAGE_LEN - 32 - 48 - TAGLEN]
        reply = bytes(peer.write_message(big))
        assert len(reply) == MAX_MESSAGE_LEN
        assert ours.read_message(reply) == big
    else:
        message = bytes(peer.write_message(payload))
        assert len(message) == MAX_MESSAGE_LEN
        assert ours.read_message(message) == payload
        big = payload[: MAX_MESSAGE_LEN - 32 - 48 - TAGLEN]
        reply = ours.write_message(big)
        assert len(reply) == MAX_MESSAGE_LEN
        assert bytes(peer.read_message(reply)) == big
