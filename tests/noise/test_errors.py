"""Failure cases of the Noise core and its framings: exact error types, and no state change
where the spec (or the package's contract) says a failed call must leave state alone."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from noisewall.noise.ciphers import CIPHER_FUNCTIONS, MAX_NONCE
from noisewall.noise.cipherstate import MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN, CipherState
from noisewall.noise.connection import NoiseConnection
from noisewall.noise.dh import DH_FUNCTIONS, KeyPair
from noisewall.noise.errors import (
    ConnectionClosedError,
    DecryptError,
    HandshakeStateError,
    InvalidKeyError,
    MessageTooLongError,
    NegotiationError,
    NoiseError,
    NonceExhaustedError,
    PatternError,
    ProtocolNameError,
    RejectedError,
)
from noisewall.noise.events import (
    Event,
    HandshakeComplete,
    MessageReceived,
    PeerClosed,
    ProtocolSwitched,
)
from noisewall.noise.handshakestate import HandshakeState
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.patterns import BASE_PATTERNS, HandshakePattern, check_validity, parse_pattern
from noisewall.noise.protocol import parse_protocol_name
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.wa import WAConnection

X25519 = DH_FUNCTIONS["25519"]
XX = "Noise_XX_25519_AESGCM_SHA256"
XX_CHACHA = "Noise_XX_25519_ChaChaPoly_SHA256"
IK = "Noise_IK_25519_AESGCM_SHA256"
NK = "Noise_NK_25519_ChaChaPoly_BLAKE2s"
XX_PSK3 = "Noise_XXpsk3_25519_ChaChaPoly_SHA256"
XX_FALLBACK = "Noise_XXfallback_25519_AESGCM_SHA256"
CIPHERS = ["AESGCM", "ChaChaPoly"]
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


# --- helpers ---------------------------------------------------------------


def cipher_state(cipher: str, key: bytes = KEY) -> CipherState:
    return CipherState(CIPHER_FUNCTIONS[cipher], key)


def raw_nonce(cipher: str, n: int) -> bytes:
    """The spec's 96-bit nonce encodings (sections 12.3, 12.4), written independently."""
    return bytes(4) + n.to_bytes(8, "big" if cipher == "AESGCM" else "little")


def raw_encrypt(cipher: str, key: bytes, n: int, plaintext: bytes, ad: bytes = b"") -> bytes:
    aead = AESGCM(key) if cipher == "AESGCM" else ChaCha20Poly1305(key)
    return aead.encrypt(raw_nonce(cipher, n), plaintext, ad)


def keypair() -> KeyPair:
    return X25519.generate_keypair()


def handshake_pair(
    name: str,
    initiator_static: KeyPair | None = None,
    responder_static: KeyPair | None = None,
    initiator_rs: bytes | None = None,
    initiator_psks: tuple[bytes, ...] = (),
    responder_psks: tuple[bytes, ...] = (),
) -> tuple[HandshakeState, HandshakeState]:
    pattern = parse_protocol_name(name).pattern
    initiator_static = initiator_static or keypair()
    responder_static = responder_static or keypair()
    if initiator_rs is None and "s" in pattern.responder_pre:
        initiator_rs = responder_static.public
    initiator = HandshakeState(
        name,
        initiator=True,
        s=initiator_static if pattern.uses_static(True) else None,
        rs=initiator_rs,
        psks=initiator_psks,
    )
    responder = HandshakeState(
        name,
        initiator=False,
        s=responder_static if pattern.uses_static(False) else None,
        rs=initiator_static.public if "s" in pattern.initiator_pre else None,
        psks=responder_psks,
    )
    return initiator, responder


def complete(initiator: HandshakeState, responder: HandshakeState) -> None:
    """Run the remaining handshake messages with empty payloads."""
    while not (initiator.complete and responder.complete):
        writer, reader = (initiator, responder) if initiator.writes_next else (responder, initiator)
        assert reader.read_message(writer.write_message(b"")) == b""


def make_connection(framing: str, initiator: bool, settings: NoiseSettings) -> NoiseConnection:
    if framing == "noisesocket":
        return NoiseSocketConnection(initiator, settings)
    return WAConnection(initiator, settings)


def pump(initiator: NoiseConnection, responder: NoiseConnection) -> tuple[list[Event], list[Event]]:
    """Shuttle bytes (writing handshake messages when due) until nothing moves."""
    initiator_events: list[Event] = []
    responder_events: list[Event] = []
    for _ in range(20):
        moved = False
        for connection, events in ((initiator, initiator_events), (responder, responder_events)):
            if connection.needs_write:
                events.extend(connection.send_handshake())
                moved = True
        data = initiator.data_to_send()
        if data:
            responder_events.extend(responder.receive_data(data))
            moved = True
        data = responder.data_to_send()
        if data:
            initiator_events.extend(initiator.receive_data(data))
            moved = True
        if not moved:
            break
    return initiator_events, responder_events


def established(framing: str) -> tuple[NoiseConnection, NoiseConnection]:
    initiator = make_connection(framing, True, NoiseSettings(protocol=XX, static=keypair()))
    responder = make_connection(framing, False, NoiseSettings(protocol=XX, static=keypair()))
    pump(initiator, responder)
    assert initiator.handshake_complete and responder.handshake_complete
    return initiator, responder


def split_handshake_frame(frame: bytes) -> tuple[bytes, bytes]:
    """(negotiation_data, noise_message) of one NoiseSocket handshake frame."""
    negotiation_len = int.from_bytes(frame[:2], "big")
    negotiation = frame[2 : 2 + negotiation_len]
    message_len = int.from_bytes(frame[2 + negotiation_len : 4 + negotiation_len], "big")
    message = frame[4 + negotiation_len :]
    assert len(message) == message_len
    return negotiation, message


def handshake_frame(negotiation: bytes, message: bytes) -> bytes:
    return (
        len(negotiation).to_bytes(2, "big")
        + negotiation
        + len(message).to_bytes(2, "big")
        + message
    )


# --- nonce exhaustion (spec 5.1) ----------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_reserved_nonce_refuses_encrypt_and_decrypt(cipher: str) -> None:
    state = cipher_state(cipher)
    state.set_nonce(MAX_NONCE)
    for _ in range(2):  # and again: the refusal must not have wrapped n to 0
        with pytest.raises(NonceExhaustedError):
            state.encrypt(b"x")
        with pytest.raises(NonceExhaustedError):
            state.encrypt_with_ad(b"ad", b"")
        assert state.n == MAX_NONCE
        # Even a ciphertext that would authenticate at nonce 2^64-1 is refused.
        with pytest.raises(NonceExhaustedError):
            state.decrypt(raw_encrypt(cipher, KEY, MAX_NONCE, b"x"))
        assert state.n == MAX_NONCE
    # After a wrap n would be 0; make sure nonce 0 traffic is not accepted either.
    with pytest.raises(NonceExhaustedError):
        state.decrypt(raw_encrypt(cipher, KEY, 0, b"x"))


@pytest.mark.parametrize("cipher", CIPHERS)
def test_last_usable_nonce(cipher: str) -> None:
    sender, receiver = cipher_state(cipher), cipher_state(cipher)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    ciphertext = sender.encrypt(b"last message")
    assert ciphertext == raw_encrypt(cipher, KEY, MAX_NONCE - 1, b"last message")
    assert sender.n == MAX_NONCE
    with pytest.raises(NonceExhaustedError):
        sender.encrypt(b"one too many")
    assert sender.n == MAX_NONCE
    assert receiver.decrypt(ciphertext) == b"last message"
    assert receiver.n == MAX_NONCE
    with pytest.raises(NonceExhaustedError):
        receiver.decrypt(ciphertext)


def test_set_nonce_range() -> None:
    state = cipher_state("AESGCM")
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            state.set_nonce(bad)
    assert state.n == 0


# --- failed decryption (spec 5.1: n is not incremented) --------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("position", [0, 5, -16, -1])
def test_tampered_ciphertext_does_not_advance_nonce(cipher: str, position: int) -> None:
    sender, receiver = cipher_state(cipher), cipher_state(cipher)
    for n in range(3):
        assert receiver.decrypt(sender.encrypt(b"warm-up %d" % n)) == b"warm-up %d" % n
    ciphertext = sender.encrypt(b"attack at dawn")
    tampered = bytearray(ciphertext)
    tampered[position] ^= 0x01
    with pytest.raises(DecryptError):
        receiver.decrypt(bytes(tampered))
    assert receiver.n == 3
    assert receiver.decrypt(ciphertext) == b"attack at dawn"
    assert receiver.n == 4


@pytest.mark.parametrize("cipher", CIPHERS)
def test_wrong_key_and_wrong_ad(cipher: str) -> None:
    sender, receiver, stranger = (
        cipher_state(cipher),
        cipher_state(cipher),
        cipher_state(cipher, OTHER_KEY),
    )
    ciphertext = sender.encrypt_with_ad(b"header", b"payload")
    with pytest.raises(DecryptError):
        stranger.decrypt_with_ad(b"header", ciphertext)
    assert stranger.n == 0
    with pytest.raises(DecryptError):
        receiver.decrypt_with_ad(b"other header", ciphertext)
    assert receiver.n == 0
    assert receiver.decrypt_with_ad(b"header", ciphertext) == b"payload"
    assert receiver.n == 1


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("length", [0, 1, 15, 16])
def test_truncated_ciphertext(cipher: str, length: int) -> None:
    sender, receiver = cipher_state(cipher), cipher_state(cipher)
    ciphertext = sender.encrypt(b"")  # a bare 16-byte tag
    assert len(ciphertext) == 16
    garbage = ciphertext[:length] if length < 16 else bytes(16)
    with pytest.raises(DecryptError):
        receiver.decrypt(garbage)
    assert receiver.n == 0
    assert receiver.decrypt(ciphertext) == b""
    assert receiver.n == 1


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
def test_tampered_transport_frame(framing: str) -> None:
    initiator, responder = established(framing)
    initiator.send_message(b"first")
    assert responder.receive_data(initiator.data_to_send()) == [MessageReceived(b"first")]
    initiator.send_message(b"second")
    frame = bytearray(initiator.data_to_send())
    frame[-1] ^= 0x80
    receive = responder.transport.receive
    assert receive is not None and receive.n == 1
    with pytest.raises(DecryptError):
        responder.receive_data(bytes(frame))
    assert receive.n == 1
    with pytest.raises(ConnectionClosedError):  # the connection is dead after a violation
        responder.receive_data(b"\x00")


def test_tampered_handshake_message_fails_the_handshake() -> None:
    initiator, responder = handshake_pair(XX)
    responder.read_message(initiator.write_message(b""))
    message = bytearray(responder.write_message(b"hello"))
    message[40] ^= 0x01  # inside the encrypted static key
    with pytest.raises(DecryptError):
        initiator.read_message(bytes(message))
    # Spec 5.3: the handshake has failed; the state refuses to go on.
    with pytest.raises(HandshakeStateError):
        initiator.read_message(bytes(message))
    with pytest.raises(HandshakeStateError):
        initiator.write_message(b"")


# --- oversize messages (spec 3: at most 65535 bytes) ------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_transport_plaintext_limit(cipher: str) -> None:
    sender, receiver = cipher_state(cipher), cipher_state(cipher)
    assert MAX_PLAINTEXT_LEN == 65519
    with pytest.raises(MessageTooLongError):
        sender.encrypt(bytes(65520))
    assert sender.n == 0
    ciphertext = sender.encrypt(bytes(65519))
    assert len(ciphertext) == MAX_MESSAGE_LEN
    assert sender.n == 1
    assert receiver.decrypt(ciphertext) == bytes(65519)
    with pytest.raises(MessageTooLongError):
        receiver.decrypt(bytes(65536))
    assert receiver.n == 1


def test_keyless_cipherstate_limit() -> None:
    state = CipherState(CIPHER_FUNCTIONS["AESGCM"])
    assert state.encrypt(bytes(65535)) == bytes(65535)
    with pytest.raises(MessageTooLongError):
        state.encrypt(bytes(65536))
    with pytest.raises(MessageTooLongError):
        state.decrypt(bytes(65536))


def test_oversize_handshake_write_changes_nothing() -> None:
    # XX: message 1 is e (32 bytes) + cleartext payload; message 2 is e, ee, s(+16), es
    # + encrypted payload; message 3 is s(+16), se + encrypted payload.
    initiator, responder = handshake_pair(XX)
    for writer, reader, limit in (
        (initiator, responder, 65535 - 32),
        (responder, initiator, 65535 - 32 - 48 - 16),
        (initiator, responder, 65535 - 48 - 16),
    ):
        index, digest = writer.message_index, writer.handshake_hash
        with pytest.raises(MessageTooLongError):
            writer.write_message(bytes(limit + 1))
        assert (writer.message_index, writer.handshake_hash) == (index, digest)
        assert writer.writes_next
        message = writer.write_message(bytes(limit))
        assert len(message) == MAX_MESSAGE_LEN
        assert reader.read_message(message) == bytes(limit)
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash == responder.handshake_hash


def test_oversize_handshake_read_is_rejected() -> None:
    _, responder = handshake_pair(XX)
    index, digest = responder.message_index, responder.handshake_hash
    with pytest.raises(MessageTooLongError):
        responder.read_message(bytes(65536))
    assert (responder.message_index, responder.handshake_hash) == (index, digest)
    assert responder.remote_ephemeral is None


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
def test_oversize_transport_body_on_connection(framing: str) -> None:
    initiator, responder = established(framing)
    send = initiator.transport.send
    assert send is not None
    with pytest.raises(MessageTooLongError):
        initiator.send_message(bytes(initiator.max_body + 1))
    assert send.n == 0
    assert initiator.data_to_send() == b""
    initiator.send_message(bytes(initiator.max_body))
    assert responder.receive_data(initiator.data_to_send()) == [
        MessageReceived(bytes(initiator.max_body))
    ]


# --- rekey (spec 11.3) ----------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_rekey(cipher: str) -> None:
    sender, receiver = cipher_state(cipher), cipher_state(cipher)
    for n in range(3):
        receiver.decrypt(sender.encrypt(b"%d" % n))
    sender.rekey()
    assert sender.n == 3  # not reset
    ciphertext = sender.encrypt(b"after rekey")
    # REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, 32 zero bytes).
    new_key = raw_encrypt(cipher, KEY, MAX_NONCE, bytes(32))[:32]
    assert ciphertext == raw_encrypt(cipher, new_key, 3, b"after rekey")
    # Only one side rekeyed: decryption fails and the receiver's n stays.
    with pytest.raises(DecryptError):
        receiver.decrypt(ciphertext)
    assert receiver.n == 3
    receiver.rekey()
    assert receiver.n == 3
    assert receiver.decrypt(ciphertext) == b"after rekey"
    assert receiver.decrypt(sender.encrypt(b"and on")) == b"and on"


def test_rekey_after_real_handshake() -> None:
    initiator, responder = handshake_pair(XX)
    complete(initiator, responder)
    i_send, r_receive = initiator.transport().send, responder.transport().receive
    r_send, i_receive = responder.transport().send, initiator.transport().receive
    assert i_send and r_receive and r_send and i_receive
    i_send.rekey()
    r_receive.rekey()
    assert r_receive.decrypt(i_send.encrypt(b"ping")) == b"ping"
    r_send.rekey()  # the initiator forgets to rekey its receiving side
    with pytest.raises(DecryptError):
        i_receive.decrypt(r_send.encrypt(b"pong"))
    assert i_receive.n == 0


# --- wrong keys ------------------------------------------------------------------------


@pytest.mark.parametrize("name", [IK, NK, "Noise_XK_25519_AESGCM_SHA256"])
def test_wrong_remote_static_fails_on_responder(name: str) -> None:
    responder_static = keypair()
    initiator, responder = handshake_pair(name, responder_static=responder_static)
    complete(initiator, responder)  # control: the right key works
    wrong = keypair().public
    initiator, responder = handshake_pair(
        name, responder_static=responder_static, initiator_rs=wrong
    )
    with pytest.raises(DecryptError):
        responder.read_message(initiator.write_message(b"secret"))
    assert not responder.complete


def test_psk_mismatch_fails() -> None:
    psk, other = bytes(range(32)), bytes(range(100, 132))
    initiator, responder = handshake_pair(XX_PSK3, initiator_psks=(psk,), responder_psks=(psk,))
    complete(initiator, responder)  # control
    initiator, responder = handshake_pair(XX_PSK3, initiator_psks=(psk,), responder_psks=(other,))
    responder.read_message(initiator.write_message(b""))
    initiator.read_message(responder.write_message(b""))
    with pytest.raises(DecryptError):
        responder.read_message(initiator.write_message(b""))  # the psk is mixed in message 3
    assert not responder.complete


def test_psk0_mismatch_fails_on_first_message() -> None:
    name = "Noise_NNpsk0_25519_AESGCM_SHA256"
    initiator, responder = handshake_pair(
        name, initiator_psks=(bytes(32),), responder_psks=(bytes(31) + b"\x01",)
    )
    with pytest.raises(DecryptError):
        responder.read_message(initiator.write_message(b""))


# --- protocol names (spec 8) --------------------------------------------------------

BAD_NAMES = [
    ("Noise_QQ_25519_AESGCM_SHA256", "unknown handshake pattern 'QQ'"),
    ("Noise_XX_25518_AESGCM_SHA256", "unsupported DH function '25518'"),
    ("Noise_XX_25519_AES256_SHA256", "unsupported cipher 'AES256'"),
    ("Noise_XX_25519_AESGCM_SHA1", "unsupported hash 'SHA1'"),
    ("Noise_XX_25519_AESGCM", "expected Noise_<pattern>_<DH>_<cipher>_<hash>"),
    ("Noise_XX_25519_AESGCM_SHA256_SHA256", "expected Noise_<pattern>"),
    ("noise_XX_25519_AESGCM_SHA256", "expected Noise_<pattern>"),
    ("", "expected Noise_<pattern>"),
    ("Noise_X X_25519_AESGCM_SHA256", "may hold only"),
    ("Noise__25519_AESGCM_SHA256", "may hold only"),
    ("Noise_xx_25519_AESGCM_SHA256", "malformed handshake pattern name 'xx'"),
    ("Noise_XX+psk0_25519_AESGCM_SHA256", "malformed handshake pattern name"),
    ("Noise_XXfoo_25519_AESGCM_SHA256", "unknown pattern modifier 'foo'"),
    ("Noise_XXpsk3+psk0_25519_AESGCM_SHA256", "ascending order"),
    ("Noise_XXpsk0+psk0_25519_AESGCM_SHA256", "repeated"),
    ("Noise_NNpsk3_25519_AESGCM_SHA256", "psk3 needs a handshake of at least 3 messages"),
    ("Noise_XXpsk0+fallback_25519_AESGCM_SHA256", "fallback must come before psk"),
    ("Noise_NKfallback_25519_AESGCM_SHA256", "fallback needs a first message of 'e', 's'"),
    ("Noise_IKfallback_25519_AESGCM_SHA256", "fallback needs a first message of 'e', 's'"),
    ("Noise_XKfallback_25519_AESGCM_SHA256", "fallback needs a first message of 'e', 's'"),
    ("Noise_Nfallback_25519_AESGCM_SHA256", "one-way"),
    ("Noise_" + "X" * 250 + "_25519_AESGCM_SHA256", "longer than 255 bytes"),
]


@pytest.mark.parametrize(("name", "fragment"), BAD_NAMES)
def test_bad_protocol_names(name: str, fragment: str) -> None:
    with pytest.raises(ProtocolNameError) as info:
        parse_protocol_name(name)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ProtocolNameError):  # and at configuration time
        NoiseSettings(protocol=name)


@pytest.mark.parametrize(
    "name",
    [
        "Noise_XXfallback_25519_AESGCM_SHA256",
        "Noise_XXfallback+psk0_448_ChaChaPoly_BLAKE2b",
        "Noise_NXfallback_25519_AESGCM_SHA512",
        "Noise_INfallback_25519_AESGCM_BLAKE2s",
        "Noise_XXpsk0+psk3_25519_AESGCM_SHA256",
        "Noise_I1K1_448_AESGCM_SHA256",
    ],
)
def test_good_protocol_names(name: str) -> None:
    assert parse_protocol_name(name).name == name


# --- pattern validity (spec 7.3 and 9.3) ---------------------------------------------


def pattern(
    messages: tuple[tuple[str, ...], ...],
    initiator_pre: tuple[str, ...] = (),
    responder_pre: tuple[str, ...] = (),
) -> HandshakePattern:
    return HandshakePattern("test", initiator_pre, responder_pre, messages)


INVALID_PATTERNS = [
    # Rule 1: DH only with keys the parties possess.
    ("rule 1: es without responder s", pattern((("e", "es"), ("e", "ee"))), "not yet exchanged"),
    ("rule 1: ee before responder e", pattern((("e", "ee"), ("e",))), "not yet exchanged"),
    ("rule 1: se without initiator s", pattern((("e",), ("e", "ee", "se"))), "not yet exchanged"),
    # Rule 2: each key sent at most once, pre-messages included.
    ("rule 2: e twice", pattern((("e",), ("e", "ee"), ("e",))), "sent twice"),
    ("rule 2: pre-message s sent again", pattern((("e", "s"), ("e", "ee")), ("s",)), "twice"),
    # Rule 3: each DH at most once.
    ("rule 3: ee twice", pattern((("e",), ("e", "ee"), ("ee",))), "performed twice"),
    # Rule 4, its four cases.
    ("rule 4: initiator se w/o ee", pattern((("e",), ("e",), ("s", "se"))), "'se' without 'ee'"),
    ("rule 4: initiator ss w/o es", pattern((("s", "ss"),), (), ("s",)), "'ss' without 'es'"),
    (
        "rule 4: responder es w/o ee",
        pattern((("e", "es"), ("e",)), (), ("s",)),
        "'es' without 'ee'",
    ),
    (
        "rule 4: responder ss w/o se",
        pattern((("e", "es", "ss"), ("e", "ee")), ("s",), ("s",)),
        "'ss' without 'se'",
    ),
    # Section 9.3: no encryption after a psk before sending an ephemeral.
    ("9.3: initiator psk w/o e", pattern((("psk",), ("e",))), "9.3"),
    ("9.3: responder psk w/o e", pattern((("e",), ("psk",))), "9.3"),
    # Pre-messages are limited to e, s or e, s; psk never appears there.
    ("pre-message order", pattern((("e",), ("e", "ee")), ("s", "e")), "pre-message"),
    ("psk pre-message", pattern((("e",), ("e", "ee")), ("psk",)), "pre-message"),
    ("unknown token", pattern((("e", "xy"),)), "unknown token"),
]

VALID_COUNTERPARTS = [
    pattern((("e",), ("e", "ee"), ("s", "se"))),  # XN
    pattern((("e", "es", "s", "ss"),), (), ("s",)),  # X
    pattern((("e", "es"), ("e", "ee")), (), ("s",)),  # NK
    pattern((("e", "es", "ss"), ("e", "ee", "se")), ("s",), ("s",)),  # KK
    pattern((("psk", "e"), ("e", "ee"))),  # NNpsk0
    pattern((("e",), ("e", "ee", "psk"))),  # NNpsk2
]


@pytest.mark.parametrize(
    ("case", "bad", "fragment"), INVALID_PATTERNS, ids=[case for case, _, _ in INVALID_PATTERNS]
)
def test_invalid_patterns_are_rejected(case: str, bad: HandshakePattern, fragment: str) -> None:
    with pytest.raises(PatternError) as info:
        check_validity(bad)
    assert fragment in str(info.value)


@pytest.mark.parametrize("good", VALID_COUNTERPARTS)
def test_valid_counterparts_pass(good: HandshakePattern) -> None:
    check_validity(good)


def test_every_spec_pattern_and_psk_variant_is_valid() -> None:
    assert len(BASE_PATTERNS) == 38
    for name, base in BASE_PATTERNS.items():
        check_validity(base)
        check_validity(parse_pattern(f"{name}psk0"))
        check_validity(parse_pattern(f"{name}psk{len(base.messages)}"))


# --- HandshakeState misuse -----------------------------------------------------------


def test_out_of_turn_calls_change_nothing() -> None:
    initiator, responder = handshake_pair(XX)
    before = (initiator.handshake_hash, responder.handshake_hash)
    with pytest.raises(HandshakeStateError):
        initiator.read_message(bytes(48))
    with pytest.raises(HandshakeStateError):
        responder.write_message(b"")
    assert (initiator.handshake_hash, responder.handshake_hash) == before
    assert initiator.message_index == responder.message_index == 0
    message = initiator.write_message(b"")
    with pytest.raises(HandshakeStateError):
        initiator.write_message(b"")  # twice in a row
    responder.read_message(message)
    with pytest.raises(HandshakeStateError):
        responder.read_message(message)  # the peer has not spoken since
    complete(initiator, responder)  # the misuse did not break the handshake
    assert initiator.handshake_hash == responder.handshake_hash
    for state in (initiator, responder):
        with pytest.raises(HandshakeStateError):
            state.write_message(b"")
        with pytest.raises(HandshakeStateError):
            state.read_message(bytes(64))
        with pytest.raises(HandshakeStateError):
            state.next_layout()


def test_transport_before_completion() -> None:
    initiator, _ = handshake_pair(XX)
    with pytest.raises(HandshakeStateError):
        initiator.transport()


@pytest.mark.parametrize(
    ("name", "initiator", "with_static", "psk_count"),
    [
        (XX, True, False, 0),  # initiator without s
        (XX, False, False, 0),  # responder without s
        (IK, True, True, 0),  # initiator without rs
        ("Noise_KK_25519_AESGCM_SHA256", False, True, 0),  # responder without rs
        (XX_FALLBACK, True, True, 0),  # fallback initiator without re
        (XX_FALLBACK, False, True, 0),  # fallback responder without its pre-message e
        (XX_PSK3, True, True, 0),  # psk missing
        (XX_PSK3, True, True, 2),  # one psk too many
        ("Noise_NNpsk0+psk2_25519_AESGCM_SHA256", False, False, 1),
    ],
)
def test_missing_keys(name: str, initiator: bool, with_static: bool, psk_count: int) -> None:
    with pytest.raises(HandshakeStateError):
        HandshakeState(
            name,
            initiator=initiator,
            s=keypair() if with_static else None,
            psks=[bytes(32)] * psk_count,
        )


def test_nn_needs_no_keys() -> None:
    initiator = HandshakeState("Noise_NN_25519_AESGCM_SHA256", initiator=True)
    responder = HandshakeState("Noise_NN_25519_AESGCM_SHA256", initiator=False)
    complete(initiator, responder)


def test_bad_key_lengths() -> None:
    with pytest.raises(InvalidKeyError):
        HandshakeState(XX_PSK3, initiator=True, s=keypair(), psks=[bytes(31)])
    with pytest.raises(InvalidKeyError):
        HandshakeState(IK, initiator=True, s=keypair(), rs=bytes(31))


def test_fallback_misuse() -> None:
    initiator, responder = handshake_pair(IK)
    with pytest.raises(HandshakeStateError):
        initiator.fallback(XX)  # not a fallback protocol
    complete(initiator, responder)
    with pytest.raises(HandshakeStateError):
        initiator.fallback(XX_FALLBACK)  # too late


# --- truncated streams ---------------------------------------------------------------


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
@pytest.mark.parametrize("keep", [1, 2, -1])
def test_eof_inside_a_transport_frame(framing: str, keep: int) -> None:
    initiator, responder = established(framing)
    initiator.send_message(b"a message that will be cut")
    frame = initiator.data_to_send()
    assert responder.receive_data(frame[:keep]) == []
    with pytest.raises(ConnectionClosedError):
        responder.receive_data(b"")


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
def test_eof_at_a_frame_boundary_is_clean(framing: str) -> None:
    initiator, responder = established(framing)
    initiator.send_message(b"bye")
    assert responder.receive_data(initiator.data_to_send()) == [MessageReceived(b"bye")]
    assert responder.receive_data(b"") == [PeerClosed()]


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
def test_eof_during_handshake(framing: str) -> None:
    settings = NoiseSettings(protocol=XX, static=keypair())
    fresh = make_connection(framing, False, settings)
    with pytest.raises(ConnectionClosedError):
        fresh.receive_data(b"")

    initiator = make_connection(framing, True, NoiseSettings(protocol=XX, static=keypair()))
    initiator.send_handshake()
    responder = make_connection(framing, False, settings)
    responder.receive_data(initiator.data_to_send())
    with pytest.raises(ConnectionClosedError):
        initiator.receive_data(b"")  # waiting for message 2
    responder.send_handshake()
    with pytest.raises(ConnectionClosedError):
        responder.receive_data(b"")  # waiting for message 3


@pytest.mark.parametrize("framing", ["noisesocket", "wa"])
def test_eof_inside_a_handshake_frame(framing: str) -> None:
    initiator = make_connection(framing, True, NoiseSettings(protocol=XX, static=keypair()))
    initiator.send_handshake()
    opening = initiator.data_to_send()
    responder = make_connection(framing, False, NoiseSettings(protocol=XX, static=keypair()))
    assert responder.receive_data(opening[:-1]) == []
    with pytest.raises(ConnectionClosedError):
        responder.receive_data(b"")


# --- NoiseSocket negotiation ----------------------------------------------------------


def test_explicit_reject() -> None:
    initiator = NoiseSocketConnection(True, NoiseSettings(protocol=XX, static=keypair()))
    responder = NoiseSocketConnection(False, NoiseSettings(protocol=XX_CHACHA, static=keypair()))
    initiator.send_handshake(b"hello")
    assert responder.receive_data(initiator.data_to_send()) == []
    assert responder.must_close and not responder.needs_write
    frame = responder.data_to_send()
    negotiation, message = split_handshake_frame(frame)
    assert negotiation and message == b""  # spec 3: reason, empty Noise message
    with pytest.raises(RejectedError) as info:
        initiator.receive_data(frame)
    assert XX in info.value.reason
    assert "not supported" in info.value.reason
    assert isinstance(info.value, NegotiationError)


def test_reject_unknown_protocol() -> None:
    responder = NoiseSocketConnection(False, NoiseSettings(protocol=XX, static=keypair()))
    name = b"Noise_ZZ_25519_AESGCM_SHA256"
    responder.receive_data(handshake_frame(name, bytes(32)))
    assert responder.must_close
    negotiation, message = split_handshake_frame(responder.data_to_send())
    assert message == b""
    assert negotiation.decode() == "unknown Noise protocol"


def test_retry() -> None:
    initiator = NoiseSocketConnection(
        True, NoiseSettings(protocol=XX, static=keypair(), accept=[XX_CHACHA])
    )
    responder = NoiseSocketConnection(
        False, NoiseSettings(protocol=XX_CHACHA, static=keypair(), retry_with=XX_CHACHA)
    )
    initiator.send_handshake(b"first try")
    assert responder.receive_data(initiator.data_to_send()) == []
    response = responder.data_to_send()
    assert split_handshake_frame(response) == (XX_CHACHA.encode(), b"")
    assert initiator.receive_data(response) == [ProtocolSwitched(XX_CHACHA, retry=True)]
    assert initiator.needs_write
    _, responder_events = pump(initiator, responder)
    assert initiator.handshake_complete and responder.handshake_complete
    assert initiator.protocol_name == responder.protocol_name == XX_CHACHA
    assert initiator.handshake_hash == responder.handshake_hash
    assert any(isinstance(event, HandshakeComplete) for event in responder_events)
    initiator.send_message(b"over chacha")
    assert responder.receive_data(initiator.data_to_send()) == [MessageReceived(b"over chacha")]


def test_retry_with_unaccepted_protocol() -> None:
    initiator = NoiseSocketConnection(True, NoiseSettings(protocol=XX, static=keypair()))
    responder = NoiseSocketConnection(
        False, NoiseSettings(protocol=XX_CHACHA, static=keypair(), retry_with=XX_CHACHA)
    )
    initiator.send_handshake()
    responder.receive_data(initiator.data_to_send())
    with pytest.raises(NegotiationError):
        initiator.receive_data(responder.data_to_send())


def pipes_pair(
    stale: bool, accept_fallback: bool = True
) -> tuple[NoiseSocketConnection, NoiseSocketConnection, KeyPair, KeyPair]:
    client, server = keypair(), keypair()
    initiator = NoiseSocketConnection(
        True,
        NoiseSettings(
            protocol=IK,
            static=client,
            remote_static=keypair().public if stale else server.public,
            accept=[XX_FALLBACK] if accept_fallback else [],
        ),
    )
    responder = NoiseSocketConnection(
        False, NoiseSettings(protocol=IK, static=server, fallbacks={IK: XX_FALLBACK})
    )
    return initiator, responder, client, server


def test_ik_with_stale_key_switches_to_xxfallback() -> None:
    initiator, responder, client, server = pipes_pair(stale=True)
    initiator.send_handshake(b"0-RTT that bob cannot read")
    events = responder.receive_data(initiator.data_to_send())
    assert events == [ProtocolSwitched(XX_FALLBACK, retry=False)]
    assert responder.needs_write
    initiator_events, responder_events = pump(initiator, responder)
    assert ProtocolSwitched(XX_FALLBACK, retry=False) in initiator_events
    assert any(isinstance(event, HandshakeComplete) for event in responder_events)
    assert initiator.protocol_name == responder.protocol_name == XX_FALLBACK
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_static == server.public
    assert responder.remote_static == client.public
    responder.send_message(b"hi alice")
    assert initiator.receive_data(responder.data_to_send()) == [MessageReceived(b"hi alice")]
    initiator.send_message(b"hi bob")
    assert responder.receive_data(initiator.data_to_send()) == [MessageReceived(b"hi bob")]


def test_ik_with_right_key_stays_ik() -> None:
    initiator, responder, client, server = pipes_pair(stale=False)
    initiator.send_handshake(b"0-RTT")
    events = responder.receive_data(initiator.data_to_send())
    assert not any(isinstance(event, ProtocolSwitched) for event in events)
    responder.send_handshake()
    response = responder.data_to_send()
    assert split_handshake_frame(response)[0] == b""  # accept: empty negotiation data
    initiator_events = initiator.receive_data(response)
    assert not any(isinstance(event, ProtocolSwitched) for event in initiator_events)
    assert initiator.protocol_name == responder.protocol_name == IK
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.remote_static == server.public
    assert responder.remote_static == client.public


def test_switch_to_unaccepted_fallback() -> None:
    initiator, responder, _, _ = pipes_pair(stale=True, accept_fallback=False)
    pump_error: NoiseError | None = None
    try:
        pump(initiator, responder)
    except NoiseError as exc:
        pump_error = exc
    assert isinstance(pump_error, NegotiationError)


def test_non_utf8_negotiation_data() -> None:
    responder = NoiseSocketConnection(False, NoiseSettings(protocol=XX, static=keypair()))
    with pytest.raises(NegotiationError):
        responder.receive_data(handshake_frame(b"\xff\xfeNoise", bytes(32)))

    initiator = NoiseSocketConnection(True, NoiseSettings(protocol=XX, static=keypair()))
    initiator.send_handshake()
    with pytest.raises(NegotiationError) as info:
        initiator.receive_data(handshake_frame(b"\xc3\x28", b""))
    assert not isinstance(info.value, RejectedError)


def test_bad_responses() -> None:
    initiator = NoiseSocketConnection(True, NoiseSettings(protocol=XX, static=keypair()))
    initiator.send_handshake()
    with pytest.raises(NegotiationError):
        initiator.receive_data(handshake_frame(b"", b""))  # neither accept nor anything else

    initiator = NoiseSocketConnection(True, NoiseSettings(protocol=XX, static=keypair()))
    responder = NoiseSocketConnection(False, NoiseSettings(protocol=XX, static=keypair()))
    initiator.send_handshake()
    responder.receive_data(initiator.data_to_send())
    responder.send_handshake()
    _, message = split_handshake_frame(responder.data_to_send())
    initiator.receive_data(handshake_frame(b"", message))
    initiator.send_handshake()
    _, final = split_handshake_frame(initiator.data_to_send())
    # Negotiation data after the responder accepted is a violation (spec 3).
    with pytest.raises(NegotiationError):
        responder.receive_data(handshake_frame(b"late", final))


def test_connection_misuse() -> None:
    responder = NoiseSocketConnection(False, NoiseSettings(protocol=XX, static=keypair()))
    with pytest.raises(HandshakeStateError):
        responder.send_handshake()  # the initiator speaks first
    with pytest.raises(HandshakeStateError):
        responder.send_message(b"too early")
    with pytest.raises(HandshakeStateError):
        _ = responder.handshake_hash
    initiator = WAConnection(True, NoiseSettings(protocol=XX, static=keypair()))
    initiator.send_handshake()
    with pytest.raises(HandshakeStateError):
        initiator.send_handshake()  # twice


# --- NoiseSocket prologues (noisesocket spec 4), checked by an independent party -------

APP_PROLOGUE = b"app prologue"


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def test_initial_prologue() -> None:
    client, server = keypair(), keypair()
    initiator = NoiseSocketConnection(
        True,
        NoiseSettings(
            protocol=IK, static=client, remote_static=server.public, prologue=APP_PROLOGUE
        ),
    )
    initiator.send_handshake(b"0-RTT")
    negotiation, message = split_handshake_frame(initiator.data_to_send())
    prologue = b"NoiseSocketInit1" + u16(len(negotiation)) + negotiation + APP_PROLOGUE
    bob = HandshakeState(IK, initiator=False, prologue=prologue, s=server)
    # IK's first payload is encrypted with h as associated data: a prologue
    # mismatch would fail here.
    assert bob.read_message(message) == b"\x00\x05" + b"0-RTT"


def test_retry_prologue() -> None:
    server = keypair()
    initiator = NoiseSocketConnection(
        True,
        NoiseSettings(protocol=XX, static=keypair(), accept=[XX_CHACHA], prologue=APP_PROLOGUE),
    )
    responder = NoiseSocketConnection(
        False,
        NoiseSettings(protocol=XX_CHACHA, static=server, retry_with=XX_CHACHA),
    )
    initiator.send_handshake()
    initial = initiator.data_to_send()
    responder.receive_data(initial)
    retry_request = responder.data_to_send()
    initiator.receive_data(retry_request)
    initiator.send_handshake()
    retry_negotiation, retry_message = split_handshake_frame(initiator.data_to_send())
    # Everything before the retry's noise_message_len, including the two zero bytes
    # of the retry request's empty noise_message_len.
    assert retry_request.endswith(b"\x00\x00")
    prologue = (
        b"NoiseSocketInit3"
        + initial
        + retry_request
        + u16(len(retry_negotiation))
        + retry_negotiation
        + APP_PROLOGUE
    )
    bob = HandshakeState(XX_CHACHA, initiator=False, prologue=prologue, s=server)
    bob.read_message(retry_message)
    reply = bob.write_message(b"\x00\x00")  # empty body, encrypted with h as AD
    initiator.receive_data(handshake_frame(b"", reply))
    assert initiator.needs_write


def test_switch_prologue() -> None:
    alice_ephemeral, client, server = keypair(), keypair(), keypair()
    initiator = NoiseSocketConnection(
        True,
        NoiseSettings(
            protocol=IK,
            static=client,
            remote_static=keypair().public,
            accept=[XX_FALLBACK],
            ephemeral=alice_ephemeral,
            prologue=APP_PROLOGUE,
        ),
    )
    responder = NoiseSocketConnection(
        False,
        NoiseSettings(
            protocol=IK,
            static=server,
            fallbacks={IK: XX_FALLBACK},
            prologue=APP_PROLOGUE,
        ),
    )
    initiator.send_handshake()
    initial = initiator.data_to_send()
    responder.receive_data(initial)
    responder.send_handshake(b"switched")
    switch_negotiation, switch_message = split_handshake_frame(responder.data_to_send())
    assert switch_negotiation == XX_FALLBACK.encode()
    prologue = (
        b"NoiseSocketInit2"
        + initial
        + u16(len(switch_negotiation))
        + switch_negotiation
        + APP_PROLOGUE
    )
    alice = HandshakeState(
        XX_FALLBACK, initiator=False, prologue=prologue, s=client, e=alice_ephemeral
    )
    assert alice.read_message(switch_message) == b"\x00\x08" + b"switched"
    assert alice.remote_static == server.public


def test_wa_prologue_is_the_header() -> None:
    client, server = keypair(), keypair()
    initiator = WAConnection(
        True,
        NoiseSettings(protocol=IK, static=client, remote_static=server.public, prologue=b"x"),
        version=(6, 1),
    )
    initiator.send_handshake(b"hello")
    data = initiator.data_to_send()
    assert data[:4] == b"WA\x06\x01"
    assert int.from_bytes(data[4:7], "big") == len(data) - 7
    bob = HandshakeState(IK, initiator=False, prologue=b"WA\x06\x01x", s=server)
    assert bob.read_message(data[7:]) == b"hello"
