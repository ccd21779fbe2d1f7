"""The media server's header, body and idle timeouts (issue 19), with short configured values.

Real TLS on loopback; the timeouts are tenths of a second, so nothing waits
long. Each test shows one deadline firing while the others are far away, and
that the server keeps serving afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger.mediaclient import download, upload
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.mediatimeouts import MediaTimeouts

SHORT = 0.3
LONG = 30.0
#: Far above SHORT and far below LONG: a deadline that fired, not one that was missed.
WITHIN = 5.0
TOKEN = "tok-alice"


def authorize(token: str) -> str | None:
    return "alice" if token == TOKEN else None


@contextlib.asynccontextmanager
async def media_server(tmp_path: Path, timeouts: MediaTimeouts) -> AsyncIterator[
        tuple[MediaServer, int, ssl.SSLContext]]:
    server = MediaServer(tmp_path / "media", authorize, max_size=64 * 1024 * 1024,
                         timeouts=timeouts)
    port = (await server.start()).address.port
    try:
        yield server, port, ssl.create_default_context(cafile=server.cert_path)
    finally:
        await server.close()


async def closed_after(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """Seconds until the server closed the connection, and what it sent before."""
    started = time.monotonic()
    received = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while chunk := await asyncio.wait_for(reader.read(65536), WITHIN):
            received += chunk
    return time.monotonic() - started, received


async def still_serving(url_port: int, server: MediaServer, tmp_path: Path) -> None:
    src = tmp_path / "good"
    src.write_bytes(b"good request")
    url = f"https://127.0.0.1:{url_port}"
    blob_id = await upload(url, TOKEN, server.fingerprint, src)
    await download(url, TOKEN, server.fingerprint, blob_id, tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b"good request"


def test_timeouts_are_validated_data() -> None:
    assert MediaTimeouts() == MediaTimeouts(header=10, body=30, idle=60)
    for bad in ({"header": 0}, {"body": -1}, {"idle": "soon"}, {"later": 1}):
        with pytest.raises(ValueError):
            MediaTimeouts.model_validate(bad)


async def test_a_silent_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async with media_server(tmp_path, MediaTimeouts(header=LONG, body=LONG, idle=SHORT)) as (
            server, port, context):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        elapsed, received = await closed_after(reader)
        assert elapsed < WITHIN
        assert received == b""
        writer.close()
        await still_serving(port, server, tmp_path)


async def test_a_kept_alive_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async with media_server(tmp_path, MediaTimeouts(header=LONG, body=LONG, idle=SHORT)) as (
            _, port, context):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(f"GET /blobs/x HTTP/1.1\r\nHost: localhost\r\n"
                     f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        elapsed, received = await closed_after(reader)
        assert received.startswith(b"HTTP/1.1 404 ")
        assert elapsed < WITHIN
        writer.close()


async def test_a_dripped_request_head_is_cut_at_the_header_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "noisewall.messenger.mediatimeouts")
    async with media_server(tmp_path, MediaTimeouts(header=SHORT, body=LONG, idle=LONG)) as (
            server, port, context):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"GET /blobs/x HTTP/1.1\r\n")
        started = time.monotonic()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            # One header byte every 50 ms: never a pause that an idle timer would see.
            while time.monotonic() - started < WITHIN and not reader.at_eof():
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.05)
        assert time.monotonic() - started < WITHIN
        assert "request head took longer than 0.3 s" in caplog.text
        writer.close()
        await still_serving(port, server, tmp_path)


async def test_a_stalled_tls_handshake_is_cut_at_the_header_timeout(tmp_path: Path) -> None:
    async with media_server(tmp_path, MediaTimeouts(header=SHORT, body=LONG, idle=LONG)) as (
            server, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no ClientHello
        elapsed, received = await closed_after(reader)
        assert elapsed < WITHIN
        assert received == b""
        writer.close()
        await still_serving(port, server, tmp_path)


async def test_a_stalled_body_gets_408_and_leaves_nothing(tmp_path: Path) -> None:
    async with media_server(tmp_path, MediaTimeouts(header=LONG, body=SHORT, idle=LONG)) as (
            server, port, context):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(f"POST /blobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}"
                     f"\r\nContent-Length: 100000\r\n\r\n".encode() + b"\0" * 1000)
        elapsed, received = await closed_after(reader)
        assert received.startswith(b"HTTP/1.1 408 ")
        assert elapsed < WITHIN
        assert list(server.blob_dir.iterdir()) == []
        writer.close()
        await still_serving(port, server, tmp_path)


async def test_a_response_the_client_stops_reading_is_cut_at_the_idle_timeout(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "noisewall.messenger.mediatimeouts")
    async with media_server(tmp_path, MediaTimeouts(header=LONG, body=LONG, idle=SHORT)) as (
            server, port, context):
        src = tmp_path / "big"
        # More than loopback's socket buffers hold, so the server's writes stall.
        src.write_bytes(os.urandom(32 * 1024 * 1024))
        blob_id = await upload(f"https://127.0.0.1:{port}", TOKEN, server.fingerprint, src)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, limit=1024)
        writer.write(f"GET /blobs/{blob_id} HTTP/1.1\r\nHost: localhost\r\n"
                     f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        for _ in range(int(WITHIN / 0.05)):
            if "stalled response took longer than 0.3 s" in caplog.text:
                break
            await asyncio.sleep(0.05)
        assert "stalled response took longer than 0.3 s" in caplog.text
        _, received = await closed_after(reader)
        assert len(received) < src.stat().st_size
        writer.close()
        await still_serving(port, server, tmp_path)
