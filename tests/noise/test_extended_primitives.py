"""P256 and XChaChaPoly, beyond the Noise spec as snow has them.

The primitives are checked against their published known answers (RFC 5903
section 8.1 for P-256 ECDH, draft-irtf-cfrg-xchacha-03 appendix A.3.1 for
XChaCha20-Poly1305); the Noise encodings snow uses (65-byte uncompressed
public keys, 32-byte x-coordinate DH output, a 24-byte nonce of 16 zero bytes
and the counter little-endian) are checked byte by byte; and whole
handshakes and NoiseSocket sessions run with them.
"""

from __future__ import annotations

import asyncio

import pytest

from noisewall.noise import (
    DecryptError,
    HandshakeState,
    InvalidKeyError,
    dh_function,
    parse_protocol_name,
)
from noisewall.noise.ciphers import cipher_function
from noisewall.noise.cipherstate import CipherState
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.stream import NoiseServer, NoiseStream, connect
from noisewall.records.endpoint import Endpoint

P256 = dh_function("P256")
XCHACHA = cipher_function("XChaChaPoly")

# RFC 5903 section 8.1 (256-bit random ECP group).
RFC5903_I = bytes.fromhex("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433")
RFC5903_GI = bytes.fromhex(
    "04DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
    "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3"
)
RFC5903_R = bytes.fromhex("C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53")
RFC5903_GR = bytes.fromhex(
    "04D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
    "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB"
)
RFC5903_GIRX = bytes.fromhex("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE")

# draft-irtf-cfrg-xchacha-03, appendix A.3.1.
XCHACHA_KEY = bytes(range(0x80, 0xA0))
XCHACHA_NONCE = bytes(range(0x40, 0x58))
XCHACHA_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
XCHACHA_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
    b"for the future, sunscreen would be it."
)
XCHACHA_SEALED = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
    "c0875924c1c7987947deafd8780acf49"
)


def test_p256_matches_rfc5903() -> None:
    initiator = P256.keypair_from_private(RFC5903_I)
    responder = P256.keypair_from_private(RFC5903_R)
    assert (initiator.public, responder.public) == (RFC5903_GI, RFC5903_GR)
    assert P256.dh(initiator, responder.public) == RFC5903_GIRX
    assert P256.dh(responder, initiator.public) == RFC5903_GIRX
    assert initiator.private_bytes() == RFC5903_I
    assert (P256.publen, P256.privlen, P256.dhlen) == (65, 32, 32)


@pytest.mark.parametrize(
    "public",
    [
        RFC5903_GR[:-1] + bytes([RFC5903_GR[-1] ^ 1]),  # off the curve
        b"\x02" + RFC5903_GR[1:],  # not uncompressed
        bytes(65),  # the point at infinity's encoding is not a key
    ],
    ids=["off-curve", "compressed-tag", "zeros"],
)
def test_p256_refuses_invalid_public_keys(public: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        P256.dh(P256.generate_keypair(), public)


def test_p256_refuses_a_zero_private_key() -> None:
    with pytest.raises(InvalidKeyError):
        P256.keypair_from_private(bytes(32))


def test_xchachapoly_matches_the_draft() -> None:
    aead = XCHACHA.new_aead(XCHACHA_KEY)
    assert aead.encrypt(XCHACHA_NONCE, XCHACHA_PLAINTEXT, XCHACHA_AAD) == XCHACHA_SEALED
    assert aead.decrypt(XCHACHA_NONCE, XCHACHA_SEALED, XCHACHA_AAD) == XCHACHA_PLAINTEXT


def test_xchachapoly_nonce_is_16_zero_bytes_then_the_counter_little_endian() -> None:
    assert XCHACHA.nonce(0x0102030405060708) == bytes(16) + bytes.fromhex("0807060504030201")
    state = CipherState(XCHACHA, XCHACHA_KEY)
    state.set_nonce(0x0102030405060708)
    sealed = state.encrypt_with_ad(XCHACHA_AAD, b"hello")
    aead = XCHACHA.new_aead(XCHACHA_KEY)
    assert aead.decrypt(XCHACHA.nonce(0x0102030405060708), sealed, XCHACHA_AAD) == b"hello"


def test_xchachapoly_tampering_is_a_decrypt_error() -> None:
    sender, receiver = CipherState(XCHACHA, XCHACHA_KEY), CipherState(XCHACHA, XCHACHA_KEY)
    sealed = bytearray(sender.encrypt(b"x" * 5000))
    sealed[-1] ^= 1
    with pytest.raises(DecryptError):
        receiver.decrypt(bytes(sealed))
    assert receiver.n == 0


def test_xchachapoly_in_place_bulk_path_matches() -> None:
    plaintext = bytes(range(256)) * 200
    buffer = bytearray(len(plaintext) + 16)
    CipherState(XCHACHA, XCHACHA_KEY).encrypt_into(plaintext, memoryview(buffer))
    assert bytes(buffer) == CipherState(XCHACHA, XCHACHA_KEY).encrypt(plaintext)


SUITES = ["P256_XChaChaPoly_SHA256", "P256_AESGCM_SHA256", "25519_XChaChaPoly_BLAKE2s",
          "P256_ChaChaPoly_BLAKE2b"]
PATTERNS = ["NN", "NK", "XX", "IK", "KK", "XXpsk3", "NNpsk0"]


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_handshake_and_transport(pattern: str, suite: str) -> None:
    protocol = parse_protocol_name(f"Noise_{pattern}_{suite}")
    dh = protocol.dh
    client, server = dh.generate_keypair(), dh.generate_keypair()
    psks = [bytes(range(32))] * protocol.pattern.psk_count
    initiator = HandshakeState(
        protocol, True, b"prologue",
        s=client if protocol.pattern.uses_static(True) else None,
        rs=server.public if "s" in protocol.pattern.responder_pre else None, psks=psks,
    )
    responder = HandshakeState(
        protocol, False, b"prologue",
        s=server if protocol.pattern.uses_static(False) else None,
        rs=client.public if "s" in protocol.pattern.initiator_pre else None, psks=psks,
    )
    sender, receiver = initiator, responder
    while not initiator.complete:
        assert receiver.read_message(sender.write_message(b"payload")) == b"payload"
        sender, receiver = receiver, sender
    assert responder.complete
    assert initiator.handshake_hash == responder.handshake_hash
    if protocol.pattern.uses_static(True):
        assert responder.remote_static == client.public
    ours, theirs = initiator.transport(), responder.transport()
    assert ours.send is not None and theirs.receive is not None
    assert theirs.receive.decrypt(ours.send.encrypt(b"ping")) == b"ping"
    assert theirs.send is not None and ours.receive is not None
    assert ours.receive.decrypt(theirs.send.encrypt(b"pong")) == b"pong"


def test_xxfallback_with_p256_and_xchachapoly() -> None:
    """Noise Pipes on the extended suite: IK to a stale key, then XXfallback."""
    suite = "P256_XChaChaPoly_SHA256"
    ik = parse_protocol_name(f"Noise_IK_{suite}")
    fallback = parse_protocol_name(f"Noise_XXfallback_{suite}")
    alice_s, bob_s, stale = (P256.generate_keypair() for _ in range(3))
    alice = HandshakeState(ik, True, s=alice_s, rs=stale.public)
    bob = HandshakeState(ik, False, s=bob_s)
    first = alice.write_message(b"0-RTT")
    with pytest.raises(DecryptError):
        bob.read_message(first)
    bob_fb = bob.fallback(fallback)
    alice_fb = alice.fallback(fallback)
    alice_fb.read_message(bob_fb.write_message(b""))
    bob_fb.read_message(alice_fb.write_message(b""))
    assert alice_fb.complete and bob_fb.complete
    assert alice_fb.remote_static == bob_s.public
    assert bob_fb.remote_static == alice_s.public


async def test_noisesocket_session_on_the_extended_suite() -> None:
    protocol = "Noise_IK_P256_XChaChaPoly_SHA256"
    server_key, client_key = P256.generate_keypair(), P256.generate_keypair()

    async def echo(stream: NoiseStream) -> None:
        async for message in stream:
            await stream.send(message)

    async with asyncio.timeout(20):
        server = NoiseServer(echo, Endpoint("127.0.0.1", 0),
                             NoiseSettings(protocol=protocol, static=server_key, padding=64))
        async with server:
            settings = NoiseSettings(protocol=protocol, static=client_key,
                                     remote_static=server_key.public, padding=64)
            async with await connect(*server.address, settings) as client:
                assert client.remote_static == server_key.public
                for message in (b"", b"over P-256", bytes(client.max_message_size)):
                    await client.send(message)
                    assert await client.receive(timeout=5) == message
