"""Media: WhatsApp-style encryption, the HTTPS blob server and the pinning client.

Everything network-facing runs for real on 127.0.0.1: aiohttp's server with
TLS 1.3, aiohttp's client, curl, and Python's ssl module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import yarl
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from noisewall.bench.kit import rss
from noisewall.messenger.mediaclient import (
    MediaAuthError,
    MediaClient,
    MediaNotFoundError,
    MediaPinError,
    MediaTooLargeError,
    download,
    upload,
)
from noisewall.messenger.mediacrypto import (
    MediaDecryptor,
    MediaDescriptor,
    MediaDescriptorError,
    MediaEncryptor,
    MediaIntegrityError,
    MediaKind,
    blob_size,
    decrypt,
    decrypt_file,
    encrypt,
    encrypt_file,
    expand_media_key,
)
from noisewall.messenger.mediaserver import MediaServer, ensure_certificate

MiB = 1024 * 1024
TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}


def authorize(token: str) -> str | None:
    return TOKENS.get(token)


# --------------------------------------------------------------------------- crypto


def reference_blob(plaintext: bytes, media_key: bytes, info: bytes) -> bytes:
    """An independent one-shot implementation of the layout WhatsApp uses."""
    okm = HKDF(algorithm=hashes.SHA256(), length=112, salt=None, info=info).derive(media_key)
    iv, cipher_key, mac_key = okm[:16], okm[16:48], okm[48:80]
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
    ciphertext = enc.update(padded) + enc.finalize()
    mac = crypto_hmac.HMAC(mac_key, hashes.SHA256())
    mac.update(iv + ciphertext)
    return ciphertext + mac.finalize()[:10]


@pytest.mark.parametrize(
    ("kind", "info"),
    [
        (MediaKind.IMAGE, b"WhatsApp Image Keys"),
        (MediaKind.VIDEO, b"WhatsApp Video Keys"),
        (MediaKind.AUDIO, b"WhatsApp Audio Keys"),
        (MediaKind.DOCUMENT, b"WhatsApp Document Keys"),
    ],
)
def test_layout_matches_whatsapp(kind: MediaKind, info: bytes) -> None:
    key = bytes(range(32))
    plaintext = b"a photo of a cat" * 100 + b"!"
    blob, result = encrypt(plaintext, kind, key)
    assert blob == reference_blob(plaintext, key, info)
    assert result.sha256_plain == hashlib.sha256(plaintext).digest()
    assert result.sha256_blob == hashlib.sha256(blob).digest()
    assert result.size == len(plaintext)
    assert result.blob_size == len(blob) == blob_size(len(plaintext))
    assert kind.info == info
    keys = expand_media_key(key, kind)
    assert (len(keys.iv), len(keys.cipher_key), len(keys.mac_key)) == (16, 32, 32)


def test_kinds_give_different_blobs() -> None:
    key = secrets.token_bytes(32)
    blobs = {encrypt(b"same bytes", kind, key)[0] for kind in MediaKind}
    assert len(blobs) == len(MediaKind)


def chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in [*points, len(data)]:
        yield data[start:point]
        start = point


@settings(max_examples=150, deadline=None)
@given(
    plaintext=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    blob_cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    kind=st.sampled_from(MediaKind),
)
def test_any_chunking_gives_the_one_shot_blob(
    plaintext: bytes, cuts: list[int], blob_cuts: list[int], kind: MediaKind
) -> None:
    key = bytes(32)
    one_shot, result = encrypt(plaintext, kind, key)
    encryptor = MediaEncryptor(key, kind)
    pieces = [encryptor.update(chunk) for chunk in chunked(plaintext, cuts)]
    pieces.append(encryptor.finalize())
    assert b"".join(pieces) == one_shot
    assert all(len(p) % 16 == 0 for p in pieces[:-1])
    assert encryptor.result == result

    decryptor = MediaDecryptor(
        key, kind, result.sha256_plain, result.sha256_blob, expected_size=len(plaintext)
    )
    out = [decryptor.update(chunk) for chunk in chunked(one_shot, blob_cuts)]
    out.append(decryptor.finalize())
    assert b"".join(out) == plaintext


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=100), data=st.data())
def test_any_flipped_bit_is_caught(plaintext: bytes, data: st.DataObject) -> None:
    blob, result = encrypt(plaintext, MediaKind.IMAGE)
    position = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    tampered = bytearray(blob)
    tampered[position] ^= 1 << bit
    with pytest.raises(MediaIntegrityError):
        decrypt(
            bytes(tampered),
            result.media_key,
            result.sha256_plain,
            result.sha256_blob,
            MediaKind.IMAGE,
        )


@pytest.mark.parametrize("cut", [0, 1, 10, 25, 26, 27])
def test_truncated_or_extended_blobs_are_refused(cut: int) -> None:
    blob, result = encrypt(b"x" * 20, MediaKind.AUDIO)  # 32 + 10 bytes
    for bad in (blob[:cut], blob + b"\0" * cut if cut else blob[:-1]):
        with pytest.raises(MediaIntegrityError):
            decrypt(bad, result.media_key, result.sha256_plain, result.sha256_blob, MediaKind.AUDIO)


def test_wrong_key_kind_or_hash_is_refused() -> None:
    blob, r = encrypt(b"voice note", MediaKind.AUDIO)
    with pytest.raises(MediaIntegrityError, match="MAC"):
        decrypt(blob, secrets.token_bytes(32), r.sha256_plain, r.sha256_blob, MediaKind.AUDIO)
    with pytest.raises(MediaIntegrityError, match="MAC"):
        decrypt(blob, r.media_key, r.sha256_plain, r.sha256_blob, MediaKind.VIDEO)
    with pytest.raises(MediaIntegrityError, match="blob"):
        decrypt(blob, r.media_key, r.sha256_plain, bytes(32), MediaKind.AUDIO)
    with pytest.raises(MediaIntegrityError, match="plaintext"):
        decrypt(blob, r.media_key, bytes(32), r.sha256_blob, MediaKind.AUDIO)
    assert decrypt(blob, r.media_key, r.sha256_plain, r.sha256_blob, MediaKind.AUDIO) == (
        b"voice note"
    )


def test_a_forged_mac_over_bad_padding_is_refused() -> None:
    """A blob whose MAC is right but whose padding is garbage: integrity error, no crash."""
    key = secrets.token_bytes(32)
    keys = expand_media_key(key, MediaKind.IMAGE)
    enc = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).encryptor()
    ciphertext = enc.update(b"\xff" * 32) + enc.finalize()
    mac = crypto_hmac.HMAC(keys.mac_key, hashes.SHA256())
    mac.update(keys.iv + ciphertext)
    blob = ciphertext + mac.finalize()[:10]
    with pytest.raises(MediaIntegrityError, match="padding"):
        decrypt(blob, key, bytes(32), hashlib.sha256(blob).digest(), MediaKind.IMAGE)


def test_decrypt_file_writes_only_verified_files(tmp_path: Path) -> None:
    src = tmp_path / "photo.jpg"
    src.write_bytes(os.urandom(300_000))
    blob = tmp_path / "blob"
    r = encrypt_file(src, blob, MediaKind.IMAGE)
    assert blob.stat().st_size == r.blob_size
    out = tmp_path / "out" / "photo.jpg"
    out.parent.mkdir()
    decrypt_file(blob, out, r.media_key, r.sha256_plain, r.sha256_blob, MediaKind.IMAGE)
    assert out.read_bytes() == src.read_bytes()

    out.unlink()
    data = bytearray(blob.read_bytes())
    data[150_000] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(MediaIntegrityError):
        decrypt_file(blob, out, r.media_key, r.sha256_plain, r.sha256_blob, MediaKind.IMAGE)
    assert list(out.parent.iterdir()) == []


def test_descriptor_round_trips_through_json() -> None:
    d = MediaDescriptor(
        media_key=secrets.token_bytes(32),
        sha256_plain=secrets.token_bytes(32),
        sha256_blob=secrets.token_bytes(32),
        size=12345,
        mime="image/jpeg",
        blob_id=secrets.token_urlsafe(32),
        kind=MediaKind.IMAGE,
    )
    wire = json.loads(json.dumps(d.to_dict()))
    assert wire["media_key"] == base64.b64encode(d.media_key).decode()
    assert MediaDescriptor.from_dict(wire) == d


@pytest.mark.parametrize(
    "change",
    [
        {"media_key": "AAAA"},
        {"media_key": "not base64!"},
        {"sha256_plain": 5},
        {"size": -1},
        {"size": True},
        {"size": "10"},
        {"mime": ""},
        {"mime": "a\nb"},
        {"blob_id": "../../etc/passwd"},
        {"kind": "sticker"},
        {"kind": None},
    ],
)
def test_bad_descriptors_raise_the_module_error(change: dict[str, object]) -> None:
    good = {
        "media_key": base64.b64encode(bytes(32)).decode(),
        "sha256_plain": base64.b64encode(bytes(32)).decode(),
        "sha256_blob": base64.b64encode(bytes(32)).decode(),
        "size": 1,
        "mime": "audio/ogg",
        "blob_id": "A" * 43,
        "kind": "audio",
    }
    MediaDescriptor.from_dict(good)
    with pytest.raises(MediaDescriptorError):
        MediaDescriptor.from_dict({**good, **change})
    with pytest.raises(MediaDescriptorError):
        MediaDescriptor.from_dict([])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- server


@pytest.fixture
async def media(tmp_path: Path) -> AsyncIterator[tuple[MediaServer, str]]:
    server = MediaServer(tmp_path / "server", authorize, max_size=8 * MiB)
    port = (await server.start()).address.port
    try:
        yield server, f"https://127.0.0.1:{port}"
    finally:
        await server.close()


def blob_files(server: MediaServer) -> list[str]:
    return sorted(p.name for p in server.blob_dir.iterdir())


async def test_round_trip_of_a_multi_mib_file(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    src = tmp_path / "video.mp4"
    src.write_bytes(os.urandom(5 * MiB + 123))
    async with MediaClient(url, "tok-alice", server.fingerprint) as alice:
        descriptor = await alice.upload_media(src, MediaKind.VIDEO, "video/mp4")
    assert descriptor.size == src.stat().st_size
    stored = server.blob_dir / descriptor.blob_id
    assert stored.stat().st_size == blob_size(descriptor.size)
    assert hashlib.sha256(stored.read_bytes()).digest() == descriptor.sha256_blob
    assert src.read_bytes()[:4096] not in stored.read_bytes()

    # Through the E2E message as JSON, then bob fetches it.
    received = MediaDescriptor.from_dict(json.loads(json.dumps(descriptor.to_dict())))
    dest = tmp_path / "bob" / "video.mp4"
    dest.parent.mkdir()
    async with MediaClient(url, "tok-bob", server.fingerprint) as bob:
        await bob.download_media(received, dest)
    assert dest.read_bytes() == src.read_bytes()
    assert os.listdir(dest.parent) == ["video.mp4"]


async def test_low_level_encrypt_upload_download_decrypt(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    src = tmp_path / "doc.pdf"
    src.write_bytes(os.urandom(3 * MiB))
    blob = tmp_path / "doc.blob"
    encrypted = encrypt_file(src, blob, MediaKind.DOCUMENT)
    blob_id = await upload(url, "tok-alice", server.fingerprint, blob)
    fetched = tmp_path / "fetched.blob"
    size = await download(url, "tok-bob", server.fingerprint, blob_id, fetched)
    assert size == encrypted.blob_size
    out = tmp_path / "out.pdf"
    decrypt_file(
        fetched,
        out,
        encrypted.media_key,
        encrypted.sha256_plain,
        encrypted.sha256_blob,
        MediaKind.DOCUMENT,
    )
    assert out.read_bytes() == src.read_bytes()


async def test_tampered_blob_gives_integrity_error_and_no_file(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    src = tmp_path / "photo.jpg"
    src.write_bytes(os.urandom(2 * MiB))
    async with MediaClient(url, "tok-alice", server.fingerprint) as client:
        descriptor = await client.upload_media(src, MediaKind.IMAGE, "image/jpeg")
        stored = server.blob_dir / descriptor.blob_id
        original = stored.read_bytes()
        data = bytearray(original)
        data[MiB] ^= 0x40
        stored.write_bytes(bytes(data))
        dest_dir = tmp_path / "inbox"
        dest_dir.mkdir()
        with pytest.raises(MediaIntegrityError):
            await client.download_media(descriptor, dest_dir / "photo.jpg")
        assert list(dest_dir.iterdir()) == []

        # A wrong media key is refused the same way.
        stored.write_bytes(original)
        wrong = dataclasses.replace(descriptor, media_key=bytes(32))
        with pytest.raises(MediaIntegrityError):
            await client.download_media(wrong, dest_dir / "photo.jpg")
        assert list(dest_dir.iterdir()) == []
        await client.download_media(descriptor, dest_dir / "photo.jpg")
        assert (dest_dir / "photo.jpg").read_bytes() == src.read_bytes()


async def test_uploads_over_the_cap_get_413_and_leave_nothing(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (server.max_size + 1))
    # With a Content-Length: refused before the body is read.
    with pytest.raises(MediaTooLargeError, match="413"):
        await upload(url, "tok-alice", server.fingerprint, big)

    # Chunked, no length: refused once the count passes the cap.
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(12):
            yield b"\1" * MiB

    with pytest.raises(MediaTooLargeError, match="413"):
        await upload(url, "tok-alice", server.fingerprint, stream())
    assert blob_files(server) == []

    # Exactly at the cap is fine.
    exact = tmp_path / "exact.bin"
    exact.write_bytes(b"\0" * server.max_size)
    blob_id = await upload(url, "tok-alice", server.fingerprint, exact)
    assert blob_files(server) == [blob_id]


async def test_tokens_are_required(media: tuple[MediaServer, str], tmp_path: Path) -> None:
    server, url = media
    src = tmp_path / "x"
    src.write_bytes(b"blob")
    for token in ("nope", "tok-alicex", "TOK-ALICE"):
        with pytest.raises(MediaAuthError, match="401"):
            await upload(url, token, server.fingerprint, src)
    for bad in ("", "tok alice", "tok-alice\r\nX-Injected: 1"):
        with pytest.raises(ValueError, match="token"):
            await upload(url, bad, server.fingerprint, src)
    blob_id = await upload(url, "tok-alice", server.fingerprint, src)
    with pytest.raises(MediaAuthError):
        await download(url, "tok-mallory", server.fingerprint, blob_id, tmp_path / "y")
    assert not (tmp_path / "y").exists()

    pin = aiohttp.Fingerprint(server.fingerprint)
    async with aiohttp.ClientSession() as session:
        for headers in (
            {},
            {"Authorization": "Basic dG9rLWFsaWNlOg=="},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer  "},
            {"Authorization": "tok-alice"},
        ):
            async with session.post(f"{url}/blobs", data=b"x", headers=headers, ssl=pin) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
            async with session.get(f"{url}/blobs/{blob_id}", headers=headers, ssl=pin) as r:
                assert r.status == 401
        async with session.get(
            f"{url}/blobs/{blob_id}", ssl=pin, headers={"Authorization": "bearer tok-bob"}
        ) as r:
            assert r.status == 200
            assert await r.read() == b"blob"
    assert blob_files(server) == [blob_id]


async def test_unknown_ids_and_traversal_get_404(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    with pytest.raises(MediaNotFoundError):
        await download(
            url, "tok-bob", server.fingerprint, secrets.token_urlsafe(32), tmp_path / "z"
        )
    assert not (tmp_path / "z").exists()
    (server.data_dir / "secret.txt").write_text("do not serve")
    part = server.blob_dir / ("." + "B" * 43 + ".part")
    part.write_text("partial upload")
    pin = aiohttp.Fingerprint(server.fingerprint)
    raw_paths = [
        "/blobs/..%2Fmedia-key.pem",
        "/blobs/..%2F..%2Fserver%2Fmedia-key.pem",
        "/blobs/%2E%2E%2Fsecret.txt",
        "/blobs/../media-key.pem",
        "/blobs/..",
        "/blobs/.",
        "/blobs/" + "." + "B" * 43 + ".part",
        "/blobs/" + "B" * 42 + "/",
        "/blobs/" + "B" * 44,
        "/blobs/%00",
        "/media-key.pem",
        "/blobs/",
    ]
    async with aiohttp.ClientSession() as session:
        for raw in raw_paths:
            target = yarl.URL(url + raw, encoded=True)
            async with session.get(
                target, ssl=pin, headers={"Authorization": "Bearer tok-bob"}
            ) as r:
                body = await r.read()
                assert r.status in (400, 404), raw
                assert b"PRIVATE KEY" not in body
                assert b"do not serve" not in body
                assert b"partial" not in body
    with pytest.raises(ValueError, match="blob id"):
        await download(url, "tok-bob", server.fingerprint, "../media-key.pem", tmp_path / "k")


async def test_an_abandoned_upload_leaves_nothing_and_the_server_keeps_serving(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    port = int(url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=server.cert_path)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(
        b"POST /blobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer tok-alice\r\n"
        b"Content-Length: 1000000\r\n\r\n" + b"\0" * 300_000
    )
    await writer.drain()
    for _ in range(100):  # the partial upload is being written
        if blob_files(server):
            break
        await asyncio.sleep(0.01)
    assert [name.endswith(".part") for name in blob_files(server)] == [True]
    writer.transport.abort()
    for _ in range(200):
        if not blob_files(server):
            break
        await asyncio.sleep(0.01)
    assert blob_files(server) == []

    # Garbage instead of HTTP: that connection is answered 400.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
    answer = await reader.read()
    assert answer.split(b" ", 2)[1] == b"400"
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()

    src = tmp_path / "x"
    src.write_bytes(b"still here")
    blob_id = await upload(url, "tok-alice", server.fingerprint, src)
    assert blob_files(server) == [blob_id]


async def test_wrong_pin_is_a_typed_error_before_any_request(
    media: tuple[MediaServer, str], tmp_path: Path
) -> None:
    server, url = media
    seen: list[str] = []

    def recording(token: str) -> str | None:
        seen.append(token)
        return authorize(token)

    server._authorize = recording
    src = tmp_path / "x"
    src.write_bytes(b"blob")
    wrong = hashlib.sha256(b"some other certificate").digest()
    with pytest.raises(MediaPinError, match="pinned"):
        await upload(url, "tok-alice", wrong, src)
    with pytest.raises(MediaPinError):
        await download(url, "tok-alice", wrong, secrets.token_urlsafe(32), tmp_path / "y")
    assert seen == []  # the token never reached the server
    assert blob_files(server) == []
    with pytest.raises(ValueError, match="32-byte"):
        MediaClient(url, "tok-alice", b"\0" * 20)


async def test_certificate_is_reused_across_restarts(tmp_path: Path) -> None:
    data = tmp_path / "server"
    cert_path, key_path, fingerprint = ensure_certificate(data)
    assert key_path.stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest() == fingerprint
    assert cert.subject.rfc4514_string() == "CN=noisewall-media"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ensure_certificate(data)[2] == fingerprint

    for _ in range(2):
        server = MediaServer(data, authorize)
        port = (await server.start()).address.port
        try:
            assert server.fingerprint == fingerprint
            # What a client really receives on the wire is what it pins.
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            await writer.wait_closed()
            assert hashlib.sha256(der).digest() == fingerprint
        finally:
            await server.close()


async def test_server_speaks_tls_13_only(media: tuple[MediaServer, str]) -> None:
    server, url = media
    port = int(url.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=server.cert_path)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
    writer.close()
    await writer.wait_closed()

    old = ssl.create_default_context(cafile=server.cert_path)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    # The server answers a protocol_version alert and hangs up; the client sees
    # the alert or the reset, depending on timing.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.open_connection("127.0.0.1", port, ssl=old)


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


def spki_pin(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_uploads_and_downloads(media: tuple[MediaServer, str], tmp_path: Path) -> None:
    server, url = media
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(MiB + 7))
    code, out, err = await curl(
        "--tlsv1.3",
        "--cacert",
        str(server.cert_path),
        "--pinnedpubkey",
        spki_pin(server.cert_path),
        "-H",
        "Authorization: Bearer tok-alice",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        f"@{src}",
        "--write-out",
        "\n%{http_code}",
        f"{url}/blobs",
    )
    assert code == 0, err
    body, status = out.rsplit(b"\n", 1)
    assert status == b"201"
    answer = json.loads(body)
    assert answer["size"] == src.stat().st_size
    assert answer["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

    # Also by name: the certificate names localhost.
    port = url.rsplit(":", 1)[1]
    dest = tmp_path / "back.bin"
    code, _, err = await curl(
        "--fail",
        "--cacert",
        str(server.cert_path),
        "-H",
        "Authorization: Bearer tok-bob",
        "-o",
        str(dest),
        f"https://localhost:{port}/blobs/{answer['id']}",
    )
    assert code == 0, err
    assert dest.read_bytes() == src.read_bytes()

    # A TLS 1.2-only curl cannot connect (35: SSL connect error).
    code, _, _ = await curl(
        "--tls-max", "1.2", "--cacert", str(server.cert_path), f"{url}/blobs/{answer['id']}"
    )
    assert code == 35
    # A wrong public-key pin is refused (90: SSL public key does not match).
    code, _, _ = await curl(
        "-k", "--pinnedpubkey", "sha256//" + "A" * 43 + "=", f"{url}/blobs/{answer['id']}"
    )
    assert code == 90


async def test_100_mib_upload_and_download_stream(tmp_path: Path) -> None:
    server = MediaServer(tmp_path / "server", authorize, max_size=128 * MiB)
    port = (await server.start()).address.port
    url = f"https://127.0.0.1:{port}"
    chunk = b"\x5a" * (256 * 1024)
    total = 100 * MiB
    samples: list[int] = []
    try:
        baseline = rss() // 1024

        async def stream() -> AsyncIterator[bytes]:
            for i in range(total // len(chunk)):
                if i % 16 == 0:
                    samples.append(rss() // 1024)
                yield chunk

        async with MediaClient(url, "tok-alice", server.fingerprint) as client:
            result = await client.upload(stream())
            assert result.size == total
            expected = hashlib.sha256()
            for _ in range(total // len(chunk)):
                expected.update(chunk)
            assert result.sha256 == expected.digest()

            sampling = True

            async def sample() -> None:
                while sampling:
                    samples.append(rss() // 1024)
                    await asyncio.sleep(0.02)

            sampler = asyncio.create_task(sample())
            dest = tmp_path / "back.bin"
            assert await client.download(result.blob_id, dest) == total
            sampling = False
            await sampler
        samples.append(rss() // 1024)
    finally:
        await server.close()
    growth_mib = (max(samples) - baseline) / 1024
    assert growth_mib < 30, f"RSS grew by {growth_mib:.1f} MiB while streaming 100 MiB"
    assert dest.stat().st_size == total
