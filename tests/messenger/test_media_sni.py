"""A media server with a public name: clients send it as the TLS SNI, and a censor matching that
name blocks media while text gets through, through a censor's route and its SOCKS5 gateway alike.

Everything is real: ``noisewall server --media-name`` in a subprocess, the censor's middlebox
on loopback, the messenger clients, TLS 1.3 and the certificate pin.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from noisewall.censor.middlebox import Middlebox, Route
from noisewall.censor.policy import parse_policy
from noisewall.messenger.client import MessengerClient
from noisewall.messenger.mediaclient import MediaClient, MediaUnavailableError
from noisewall.messenger.mediaserver import MediaServer, ensure_certificate
from noisewall.messenger.profile import ProfileError
from noisewall.messenger.server import ChatServer
from noisewall.ports import free_port
from noisewall.records.endpoint import Endpoint

BLOCKED = "mmg.example"
POLICY = f"""
rules:
  - name: media-by-name
    match: {{protocol: tls, sni: {BLOCKED}}}
    action: reset
"""


@contextlib.asynccontextmanager
async def _server(data: Path, media_name: str) -> AsyncIterator[tuple[int, int, str]]:
    """``noisewall server --media-name``: (chat port, media port, its stderr's media line)."""
    chat_port, media_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", "server", "--data", str(data),
        "--listen", f"127.0.0.1:{chat_port}", "--media-listen", f"127.0.0.1:{media_port}",
        "--media-name", media_name, stderr=asyncio.subprocess.PIPE)
    try:
        assert process.stderr is not None
        lines = [(await asyncio.wait_for(process.stderr.readline(), 20)).decode()
                 for _ in range(2)]
        assert re.search(r"chat on 127\.0\.0\.1:\d+", lines[0]), lines
        yield chat_port, media_port, lines[1]
    finally:
        process.terminate()
        await process.wait()


def _flows(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


@pytest.mark.parametrize("path", ["route", "socks5"])
@pytest.mark.parametrize("name", [BLOCKED, "mmg.other.example"])
async def test_the_censor_matches_the_media_name_and_lets_text_through(
    tmp_path: Path, path: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = name == BLOCKED
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(os.urandom(50_000))
    policy = parse_policy(POLICY, "censor.yaml")
    log = io.StringIO()
    async with _server(tmp_path / "server", name) as (chat_port, media_port, media_line), \
            Middlebox(lambda: policy, decision_log=log) as censor:
        assert f"media on https://127.0.0.1:{media_port} as {name}," in media_line
        # Carol sends from outside the censored network: her upload never meets the censor.
        async with MessengerClient.open(tmp_path / "carol") as carol:
            await carol.register("carol", f"127.0.0.1:{chat_port}")
        # Alice and Bob reach both servers only through the censor, by address.
        socks5: Endpoint | None = None
        server, media_url = f"127.0.0.1:{chat_port}", None
        if path == "socks5":
            gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
            socks5 = gateway
        else:
            chat = await censor.add_route(Route(Endpoint("127.0.0.1", 0),
                                                Endpoint("127.0.0.1", chat_port)))
            media = await censor.add_route(Route(Endpoint("127.0.0.1", 0),
                                                 Endpoint("127.0.0.1", media_port)))
            server, media_url = f"127.0.0.1:{chat.port}", f"https://127.0.0.1:{media.port}"
        async with MessengerClient.open(tmp_path / "bob", socks5) as bob:
            await bob.register("bob", server, media_url=media_url)
        async with MessengerClient.open(tmp_path / "alice", socks5) as alice:
            await alice.register("alice", server, media_url=media_url)
            text_id = await alice.send_text("bob", "text gets through")
            if blocked:
                with pytest.raises(MediaUnavailableError):
                    await alice.send_media("bob", "photo", photo)
            else:
                await alice.send_media("bob", "photo", photo)
        async with MessengerClient.open(tmp_path / "carol") as carol:
            carol_photo = await carol.send_media("bob", "photo", photo)
        async with MessengerClient.open(tmp_path / "bob", socks5) as bob:
            received = {item.entry.msg_id: item for item in await bob.receive(wait=2)}
    assert received[text_id].entry.body["text"] == "text gets through"
    download = received[carol_photo].media
    assert download is not None
    if blocked:
        assert (download.state, download.attempts) == ("pending", 1)  # retried later
        assert received[carol_photo].media_path is None
    else:
        assert download.state == "downloaded"
        media_path = received[carol_photo].media_path
        assert media_path is not None and media_path.read_bytes() == photo.read_bytes()
        assert len(received) == 3  # Alice's photo too
    flows = _flows(log)
    tls = [f for f in flows if f["protocol"] == "tls"]
    # Alice's upload, Bob's download(s): every media flow named the server, whatever the path.
    assert len(tls) >= 2 and {f["sni"] for f in tls} == {name}, tls
    assert {f["effect"] for f in tls} == ({"reset"} if blocked else {"allow"})
    chat_flows = [f for f in flows if f["protocol"] == "noisesocket"]
    assert chat_flows and {f["effect"] for f in chat_flows} == {"allow"}
    gc.collect()  # aiohttp reports a connector it was never asked to close when it is collected
    assert not [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]


async def test_no_name_means_no_sni_as_before(tmp_path: Path) -> None:
    """Without ``server_name`` a client reaching the server by address sends no SNI at all."""
    policy = parse_policy("rules: [{action: allow}]", "allow.yaml")
    log = io.StringIO()
    media = MediaServer(tmp_path / "media", lambda token: "alice" if token == "tok" else None)
    port = (await media.start()).address.port
    try:
        assert "server_name" not in media.announcement(f"https://127.0.0.1:{port}")
        async with Middlebox(lambda: policy, decision_log=log) as censor:
            gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
            async with MediaClient(f"https://127.0.0.1:{port}", "tok", media.fingerprint,
                                   socks5=gateway) as client:
                await client.upload(_chunks())
    finally:
        await media.close()
    [flow] = _flows(log)
    assert (flow["protocol"], flow["sni"]) == ("tls", None)


async def _chunks() -> AsyncIterator[bytes]:
    yield b"x" * 1000


def test_the_certificate_and_the_announcement_name_the_server(tmp_path: Path) -> None:
    def dns_names(cert_path: Path) -> list[str]:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return list(san.get_values_for_type(x509.DNSName))

    cert_path, _, plain = ensure_certificate(tmp_path)
    assert dns_names(cert_path) == ["localhost"]
    server = MediaServer(tmp_path, lambda token: None, server_name="MMG.example")
    assert server.fingerprint != plain and dns_names(cert_path) == ["localhost", BLOCKED]
    assert server.announcement("https://127.0.0.1:1") == {
        "url": "https://127.0.0.1:1", "fingerprint": server.fingerprint.hex(),
        "server_name": BLOCKED}
    assert ensure_certificate(tmp_path, BLOCKED)[2] == server.fingerprint  # restarts keep the pin
    assert ensure_certificate(tmp_path)[2] == server.fingerprint  # dropping the name costs nothing


@pytest.mark.parametrize("bad", ["127.0.0.1", "::1", "mmg..example", "-mmg.example",
                                 "mmg.example.", "mmg example", "x" * 64 + ".example", ""])
async def test_bad_names_are_refused_with_a_clear_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="host name"):
        MediaServer(tmp_path, lambda token: None, server_name=bad)
    with pytest.raises(ValueError, match="host name"):
        MediaClient("https://127.0.0.1:1", "tok", b"\0" * 32, server_name=bad)
    assert not (tmp_path / "media-cert.pem").exists()


async def test_a_bad_name_announced_by_the_server_fails_media_alone(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(os.urandom(1000))
    chat = ChatServer(tmp_path / "server", listen=Endpoint("127.0.0.1", 0))
    chat.media = {"url": "https://127.0.0.1:1", "fingerprint": "00" * 32,
                  "server_name": "10.0.0.1"}
    async with chat:
        port = chat.address.port
        async with MessengerClient.open(tmp_path / "bob") as bob:
            await bob.register("bob", f"127.0.0.1:{port}")
        async with MessengerClient.open(tmp_path / "alice") as alice:
            await alice.register("alice", f"127.0.0.1:{port}")
            with pytest.raises(ProfileError, match=r"media endpoint is unusable: '10\.0\.0\.1'"):
                await alice.send_media("bob", "photo", photo)
            text_id = await alice.send_text("bob", "text still works")
        async with MessengerClient.open(tmp_path / "bob") as bob:
            [item] = await bob.receive(wait=2)
    assert item.entry.msg_id == text_id


def test_the_cli_refuses_a_bad_name_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "noisewall", "server", "--data", str(tmp_path / "data"),
         "--media-name", "10.0.0.1"], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2
    assert "'10.0.0.1' is an IP address, not a host name" in run.stderr
    assert not (tmp_path / "data").exists()
