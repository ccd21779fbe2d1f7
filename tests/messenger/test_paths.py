"""How messages get through: a SOCKS5 gateway, an offline outbox, a replayed handshake."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.censor.middlebox import Middlebox, Route
from noisewall.censor.policy import parse_policy
from noisewall.messenger.client import MessengerClient
from noisewall.ports import free_port
from noisewall.records.endpoint import Endpoint


class Server:
    """``noisewall server`` on fixed ports, so clients can find it again after a restart."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.chat_port = free_port()
        self.media_port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.chat_port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "noisewall", "server", "--data", str(self.data),
            "--listen", self.address, "--media-listen", f"127.0.0.1:{self.media_port}",
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stderr is not None
        line = (await asyncio.wait_for(self.process.stderr.readline(), 20)).decode()
        assert re.search(r"chat on 127\.0\.0\.1:\d+", line), line

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    running = Server(tmp_path / "server")
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_chat_and_media_through_the_censors_socks5_gateway(
    tmp_path: Path, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    policy = parse_policy("rules: [{action: allow}]", "allow.yaml")
    log = io.StringIO()
    async with Middlebox(lambda: policy, decision_log=log) as censor:
        gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(os.urandom(100_000))
        async with MessengerClient.open(tmp_path / "bob") as bob:
            await bob.register("bob", server.address)
        async with MessengerClient.open(tmp_path / "alice",
                                        socks5=gateway) as alice:
            await alice.register("alice", server.address)
            text_id = await alice.send_text("bob", "via the gateway")
            photo_id = await alice.send_media("bob", "photo", photo)
        async with MessengerClient.open(tmp_path / "bob") as bob:
            received = {item.entry.msg_id: item for item in await bob.receive(wait=2)}
    assert received[text_id].entry.body["text"] == "via the gateway"
    media_path = received[photo_id].media_path
    assert media_path is not None and media_path.read_bytes() == photo.read_bytes()
    flows = [json.loads(line) for line in log.getvalue().splitlines()]
    protocols = {(flow["protocol"], flow["server"]) for flow in flows}
    assert ("noisesocket", server.address) in protocols
    assert ("tls", f"127.0.0.1:{server.media_port}") in protocols
    gc.collect()  # aiohttp reports a leaked (never closed) SOCKS5 connector when it is collected
    assert not [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]


async def test_a_message_sent_offline_is_delivered_after_reconnect(
    tmp_path: Path, server: Server
) -> None:
    async with MessengerClient.open(tmp_path / "bob") as bob:
        await bob.register("bob", server.address)
    async with MessengerClient.open(tmp_path / "alice") as alice:
        await alice.register("alice", server.address)
        await alice.send_text("bob", "first")  # the E2E session exists from here on
    await server.stop()
    async with MessengerClient.open(tmp_path / "alice") as alice:
        offline_id = await alice.send_text("bob", "written while the server was down")
        assert alice.queued(offline_id)
    await server.start()
    async with MessengerClient.open(tmp_path / "alice") as alice:
        await alice.receive(wait=0.2)  # any later run flushes the outbox first
        assert not alice.queued(offline_id)
    async with MessengerClient.open(tmp_path / "bob") as bob:
        texts = sorted(item.entry.body["text"] for item in await bob.receive(wait=2))
    assert texts == ["first", "written while the server was down"]


async def test_a_replayed_handshake_gets_nowhere(tmp_path: Path, server: Server) -> None:
    # Record everything a real client sends (handshake and requests) through a relay...
    recorded = bytearray()
    chat_port = server.chat_port

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", chat_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                       record: bool) -> None:
            while data := await src.read(65536):
                if record:
                    recorded.extend(data)
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False),
                             return_exceptions=True)

    proxy = await asyncio.start_server(relay, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    async with proxy:
        async with MessengerClient.open(tmp_path / "bob") as bob:
            await bob.register("bob", server.address)
        async with MessengerClient.open(tmp_path / "alice") as alice:
            alice.profile.set("server", f"127.0.0.1:{proxy_port}")
            await alice.register("alice", f"127.0.0.1:{proxy_port}")
            await alice.send_text("bob", "once")
    # ...then replay it byte for byte to the server: the handshake cannot complete.
    reader, writer = await asyncio.open_connection("127.0.0.1", chat_port)
    writer.write(bytes(recorded))
    await writer.drain()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, TimeoutError)):
        while True:
            if not await asyncio.wait_for(reader.read(65536), 5):
                raise asyncio.IncompleteReadError(b"", None)
    writer.close()
    async with MessengerClient.open(tmp_path / "bob") as bob:
        texts = [item.entry.body["text"] for item in await bob.receive(wait=1)]
    assert texts == ["once"]  # the replay delivered nothing more


async def test_wa_framing_and_a_media_url_override(tmp_path: Path) -> None:
    server = Server(tmp_path / "server")
    server.process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", "server", "--data", str(server.data),
        "--listen", server.address, "--media-listen", f"127.0.0.1:{server.media_port}",
        "--framing", "wa", stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert server.process.stderr is not None
        line = (await asyncio.wait_for(server.process.stderr.readline(), 20)).decode()
        assert "(wa)" in line, line
        # The media server is reached through a censor route at another port.
        policy = parse_policy("rules: [{action: allow}]", "allow.yaml")
        log = io.StringIO()
        async with Middlebox(lambda: policy, decision_log=log) as censor:
            route = await censor.add_route(Route(Endpoint("127.0.0.1", 0),
                                                 Endpoint("127.0.0.1", server.media_port)))
            voice = tmp_path / "note.ogg"
            voice.write_bytes(os.urandom(20_000))
            async with MessengerClient.open(tmp_path / "bob") as bob:
                await bob.register("bob", server.address, framing="wa")
            async with MessengerClient.open(tmp_path / "alice") as alice:
                await alice.register("alice", server.address, framing="wa",
                                     media_url=f"https://127.0.0.1:{route.port}")
                voice_id = await alice.send_media("bob", "voice", voice)
            async with MessengerClient.open(tmp_path / "bob") as bob:
                [item] = await bob.receive(wait=2)
        assert item.entry.msg_id == voice_id
        assert item.media_path is not None and item.media_path.read_bytes() == voice.read_bytes()
        [flow] = [json.loads(line) for line in log.getvalue().splitlines()]
        assert flow["protocol"] == "tls"
    finally:
        await server.stop()


async def test_an_ack_lost_in_a_crash_means_a_resend_never_a_duplicate(
    tmp_path: Path, server: Server
) -> None:
    async with MessengerClient.open(tmp_path / "bob") as bob:
        await bob.register("bob", server.address)
    alice = MessengerClient.open(tmp_path / "alice")
    await alice.register("alice", server.address)
    msg_id = await alice.send_text("bob", "acked just before the crash")
    assert not alice.queued(msg_id)  # the server acked it...
    # ...and the process dies before that ack reaches the profile: no close().
    assert alice._connection is not None
    await alice._connection.close()
    alice.profile.db.close()
    async with MessengerClient.open(tmp_path / "alice") as alice:
        assert alice.queued(msg_id)  # on disk it still waits in the outbox
        assert await alice.flush() == 0  # sent again; the server remembers the id
        assert not alice.queued(msg_id)
    async with MessengerClient.open(tmp_path / "alice") as alice:  # written at close
        assert not alice.queued(msg_id)
        statuses = {entry.msg_id: entry.status for entry in alice.profile.history()}
    assert statuses[msg_id] == "sent"
    async with MessengerClient.open(tmp_path / "bob") as bob:
        texts = [item.entry.body["text"] for item in await bob.receive(wait=1.5)]
    assert texts == ["acked just before the crash"]


async def test_delivered_receipts_go_out_while_receive_still_waits(
    tmp_path: Path, server: Server
) -> None:
    async with MessengerClient.open(tmp_path / "bob") as bob, \
            MessengerClient.open(tmp_path / "alice") as alice:
        await bob.register("bob", server.address)
        await alice.register("alice", server.address)
        listening = asyncio.create_task(bob.receive(wait=30))
        msg_id = await alice.send_text("bob", "are you there?")
        status = ""
        async with asyncio.timeout(10):
            while status != "delivered":
                await alice.receive(wait=0.2)
                status = {e.msg_id: e.status for e in alice.profile.history()}[msg_id]
        assert not listening.done()  # bob is still listening: the receipt did not wait for it
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening


async def test_a_media_message_with_a_bad_descriptor_is_dropped_alone(
    tmp_path: Path, server: Server
) -> None:
    async with MessengerClient.open(tmp_path / "bob") as bob:
        await bob.register("bob", server.address)
    async with MessengerClient.open(tmp_path / "alice") as alice:
        await alice.register("alice", server.address)
        # A peer's client sends a photo whose descriptor is garbage, then a text.
        await alice._send_payload("bob", {"kind": "photo", "media": {"blob_id": "../x"},
                                          "name": "evil.jpg"})
        await alice.send_text("bob", "still here")
    async with MessengerClient.open(tmp_path / "bob") as bob:
        received = await bob.receive(wait=1.5)
        assert [item.entry.body.get("text") for item in received] == ["still here"]
        assert await bob.receive(wait=0.5) == []  # acknowledged: nothing comes back
