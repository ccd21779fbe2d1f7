"""A media download that fails waits as pending; the batch's other media still arrive.

The real chat server and the real HTTPS media server run on loopback in this
process; a middleware on the media server answers 503 for chosen blobs (an
overloaded or failing backend), or the media server is stopped altogether.
Bob's profile is closed and reopened (or used by a fresh ``noisewall``
process) between receives, so the pending state is shown to be on disk. Only
the clock that schedules retries is fake.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from noisewall.clock import ManualClock
from noisewall.messenger.client import MessengerClient, Received
from noisewall.messenger.mediaclient_downloads import RetryPolicy
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer
from noisewall.ports import free_port
from noisewall.records.endpoint import Endpoint

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
START = 1_700_000_000.0


class Media:
    """The real media server on a fixed port (so it can be stopped and started again)."""

    def __init__(self, chat: ChatServer, data: Path) -> None:
        self.chat = chat
        self.data = data
        self.port = free_port()
        self.broken: set[str] = set()  # blob ids answered with 503
        self.requests: list[str] = []  # blob ids asked for, in order
        self.server: MediaServer | None = None

    async def start(self) -> None:
        # A fresh server object on the same folder: same certificate, same blobs.
        server = MediaServer(self.data, self.chat.authorize_media,
                             listen=Endpoint("127.0.0.1", self.port))
        server.app.middlewares.append(self._flaky)
        await server.start()
        self.server = server
        self.chat.media = {"url": f"https://127.0.0.1:{self.port}",
                           "fingerprint": server.fingerprint.hex()}

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    @web.middleware
    async def _flaky(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        blob_id = request.match_info.get("blob_id")
        if blob_id is not None:
            self.requests.append(blob_id)
            if blob_id in self.broken:
                return web.json_response({"error": "backend unavailable"}, status=503)
        return await handler(request)

    def blob(self, blob_id: str) -> Path:
        return self.data / "blobs" / blob_id


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[ChatServer, Media]]:
    chat = ChatServer(tmp_path / "server", listen=Endpoint("127.0.0.1", 0))
    media = Media(chat, tmp_path / "server" / "media")
    await media.start()
    await chat.start()
    try:
        yield chat, media
    finally:
        await media.stop()
        await chat.close()


class Sent:
    """Alice's messages to bob: message ids, the files and their blob ids."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.files: dict[str, Path] = {}
        self.blobs: dict[str, str] = {}


async def alice_sends(tmp_path: Path, chat: ChatServer, kinds: tuple[str, ...]) -> Sent:
    """Register alice and bob, then alice sends a text and one media of each kind."""
    address = f"127.0.0.1:{chat.address.port}"
    async with MessengerClient.open(tmp_path / "bob") as bob:
        await bob.register("bob", address)
    sent = Sent()
    async with MessengerClient.open(tmp_path / "alice") as alice:
        await alice.register("alice", address)
        sent.ids["text"] = await alice.send_text("bob", "the photos follow")
        for index, kind in enumerate(kinds):
            path = tmp_path / f"{kind}-{index}.bin"
            path.write_bytes(os.urandom(50_000 + 10_000 * index))
            key = f"{kind}-{index}"
            sent.files[key] = path
            sent.ids[key] = await alice.send_media("bob", kind, path)
        bodies = {entry.msg_id: entry.body for entry in alice.profile.history("bob")}
    for key in sent.files:
        sent.blobs[key] = bodies[sent.ids[key]]["media"]["blob_id"]
    return sent


def by_id(items: list[Received]) -> dict[str, Received]:
    return {item.entry.msg_id: item for item in items}


async def cli(*args: str) -> str:
    """A fresh ``noisewall`` process (while this loop keeps serving); its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"{args}: {err.decode()}"
    return out.decode()


async def test_a_503_leaves_one_media_pending_the_others_arrive_and_a_later_receive_fetches_it(
    tmp_path: Path, servers: tuple[ChatServer, Media]
) -> None:
    chat, media = servers
    sent = await alice_sends(tmp_path, chat, ("photo", "video", "voice"))
    media.broken.add(sent.blobs["video-1"])  # the middle one of the batch
    clock = ManualClock(START)

    async with MessengerClient.open(tmp_path / "bob", clock=clock) as bob:
        received = by_id(await bob.receive(wait=1.5))
    assert set(received) == set(sent.ids.values())
    assert received[sent.ids["text"]].entry.body["text"] == "the photos follow"
    for key in ("photo-0", "voice-2"):
        item = received[sent.ids[key]]
        assert item.media is not None and item.media.state == "downloaded"
        assert item.media_path is not None
        assert item.media_path.read_bytes() == sent.files[key].read_bytes()
    video = received[sent.ids["video-1"]].media
    assert video is not None
    assert (video.state, video.attempts, video.reason) == ("pending", 1, "unavailable")
    assert "HTTP 503" in (video.error or "")
    assert video.next_attempt == START + 30
    assert received[sent.ids["video-1"]].media_path is None
    assert not [p for p in (tmp_path / "bob" / "media").iterdir()
                if p.name.startswith(sent.ids["video-1"])]

    # Another process reads the profile: the pending state is on disk, and shown.
    lines = (await cli("client", "--profile", str(tmp_path / "bob"), "history", "alice"))
    video_line = next(line for line in lines.splitlines() if sent.ids["video-1"] in line)
    assert "download pending (1 attempt failed, next try after 2023-11-14 22:13:50 UTC): " \
           "HTTP 503: backend unavailable" in video_line
    history = json.loads(await cli("client", "--profile", str(tmp_path / "bob"), "history",
                                   "alice", "--json"))
    states = {entry["id"]: entry.get("media", {}).get("state") for entry in history}
    assert states[sent.ids["photo-0"]] == "downloaded"
    assert states[sent.ids["video-1"]] == "pending"

    # The media server recovers. A reopened client waits out the backoff, then fetches it.
    media.broken.clear()
    async with MessengerClient.open(tmp_path / "bob", clock=clock) as bob:
        asked = len(media.requests)
        assert await bob.receive(wait=0.2) == []
        assert len(media.requests) == asked  # not due yet: not even tried
    clock.advance(30)
    async with MessengerClient.open(tmp_path / "bob", clock=clock) as bob:
        later = await bob.receive(wait=0.2)
    assert [(item.entry.msg_id, item.retried) for item in later] == [(sent.ids["video-1"], True)]
    fetched = later[0]
    assert fetched.media is not None and fetched.media.state == "downloaded"
    assert fetched.media.attempts == 1  # one failed attempt, then this one
    assert fetched.media_path is not None
    assert fetched.media_path.read_bytes() == sent.files["video-1"].read_bytes()
    assert fetched.as_json()["retried"] is True
    async with MessengerClient.open(tmp_path / "bob", clock=clock) as bob:
        assert await bob.receive(wait=0.2) == []  # nothing left to retry
        assert {d.state for d in bob.media_downloads().values()} == {"downloaded"}


async def test_with_the_media_server_down_the_batch_waits_and_a_new_process_fetches_it(
    tmp_path: Path, servers: tuple[ChatServer, Media]
) -> None:
    chat, media = servers
    sent = await alice_sends(tmp_path, chat, ("photo", "voice"))
    await media.stop()  # connection refused
    profile = str(tmp_path / "bob")

    received = json.loads(await cli("client", "--profile", profile, "receive", "--wait", "1.5",
                                    "--json"))
    items = {item["id"]: item for item in received}
    assert set(items) == set(sent.ids.values())
    assert items[sent.ids["text"]]["body"]["text"] == "the photos follow"
    for key in ("photo-0", "voice-1"):
        state = items[sent.ids[key]]["media"]
        assert (state["state"], state["attempts"], state["reason"]) == (
            "pending", 1, "unavailable")
        assert "media server unreachable" in state["error"]
        assert "file" not in items[sent.ids[key]]
    text = await cli("client", "--profile", profile, "history", "alice")
    assert text.count("download pending (1 attempt failed") == 2

    await media.start()
    out = await cli("client", "--profile", profile, "download")  # now, whatever the backoff
    for key in ("photo-0", "voice-1"):
        dest = tmp_path / "bob" / "media" / f"{sent.ids[key]}-{sent.files[key].name}"
        assert f"{sent.ids[key]} alice {key.split('-')[0]} (earlier message): {dest}" in out
        assert dest.read_bytes() == sent.files[key].read_bytes()
    history = json.loads(await cli("client", "--profile", profile, "history", "--json"))
    assert sorted(entry["media"]["state"] for entry in history if "media" in entry) == [
        "downloaded", "downloaded"]


async def test_a_tampered_or_missing_blob_is_reported_and_never_retried(
    tmp_path: Path, servers: tuple[ChatServer, Media]
) -> None:
    chat, media = servers
    sent = await alice_sends(tmp_path, chat, ("photo", "video", "voice"))
    tampered = media.blob(sent.blobs["photo-0"])
    blob = bytearray(tampered.read_bytes())
    blob[100] ^= 1
    tampered.write_bytes(bytes(blob))
    media.blob(sent.blobs["video-1"]).unlink()  # 404
    clock = ManualClock(START)

    async with MessengerClient.open(tmp_path / "bob", clock=clock) as bob:
        received = by_id(await bob.receive(wait=1.5))
    photo, video, voice = (received[sent.ids[key]].media
                           for key in ("photo-0", "video-1", "voice-2"))
    assert photo is not None and video is not None and voice is not None
    assert (photo.state, photo.reason) == ("failed", "integrity")
    assert "integrity check failed" in (photo.error or "")
    assert (video.state, video.reason) == ("failed", "refused")
    assert "HTTP 404" in (video.error or "")
    assert voice.state == "downloaded"
    assert sorted(p.name for p in (tmp_path / "bob" / "media").iterdir()) == [
        f"{sent.ids['voice-2']}-{sent.files['voice-2'].name}"]  # no trace of the others

    asked = len(media.requests)
    clock.advance(10 * 24 * 3600)
    async with MessengerClient.open(tmp_path / "bob", clock=clock) as bob:
        assert await bob.receive(wait=0.2) == []
        again = await bob.retry_downloads([sent.ids["photo-0"], sent.ids["video-1"]])
    assert [(item.media.state, item.retried) for item in again if item.media] == [
        ("failed", False), ("failed", False)]
    assert len(media.requests) == asked  # reported, never fetched again
    line = (await cli("client", "--profile", str(tmp_path / "bob"), "history", "alice"))
    assert "download failed: integrity check failed" in line


async def test_after_the_last_attempt_it_is_failed_until_asked_for_by_id(
    tmp_path: Path, servers: tuple[ChatServer, Media]
) -> None:
    chat, media = servers
    sent = await alice_sends(tmp_path, chat, ("photo",))
    media.broken.add(sent.blobs["photo-0"])
    clock = ManualClock(START)
    policy = RetryPolicy(attempts=3, first_delay=10, max_delay=15)
    photo_id = sent.ids["photo-0"]

    states = []
    for wait in (1.5, 0.2, 0.2):
        async with MessengerClient.open(tmp_path / "bob", clock=clock, media_retry=policy) as bob:
            item = by_id(await bob.receive(wait=wait))[photo_id]
        assert item.media is not None
        states.append((item.media.state, item.media.attempts, item.media.next_attempt - START))
        clock.advance(15)
    assert states == [("pending", 1, 10), ("pending", 2, 15 + 15), ("failed", 3, 30 + 15)]
    assert item.media is not None
    assert item.media.describe().startswith("download failed after 3 attempts: HTTP 503")

    asked = len(media.requests)
    clock.advance(24 * 3600)
    async with MessengerClient.open(tmp_path / "bob", clock=clock, media_retry=policy) as bob:
        assert await bob.receive(wait=0.2) == []
        assert len(media.requests) == asked  # given up: receives leave it alone
        media.broken.clear()
        [asked_for] = await bob.retry_downloads([photo_id])  # the user asks for it by id
    assert asked_for.retried and asked_for.media is not None
    assert asked_for.media.state == "downloaded"
    assert asked_for.media_path is not None
    assert asked_for.media_path.read_bytes() == sent.files["photo-0"].read_bytes()
