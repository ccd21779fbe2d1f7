"""Two users on one machine chat through the CLI: every kind of message, verified."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisewall.messenger.client import MessengerClient


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewall", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout.strip()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "server"
    process = subprocess.Popen(
        [sys.executable, "-m", "noisewall", "server", "--data", str(data),
         "--listen", "127.0.0.1:0", "--media-listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"chat on (127\.0\.0\.1:\d+)", line)
        assert match, line
        assert "media on https://" in process.stderr.readline()
        yield match.group(1), data
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_two_users_exchange_every_kind_of_message(tmp_path: Path,
                                                  server: tuple[str, Path]) -> None:
    address, data = server
    alice, bob = str(tmp_path / "alice"), str(tmp_path / "bob")
    assert "registered alice" in ok("client", "--profile", alice, "register", "alice",
                                    "--server", address)
    ok("client", "--profile", bob, "register", "bob", "--server", address)
    taken = cli("client", "--profile", str(tmp_path / "eve"), "register", "bob",
                "--server", address)
    assert taken.returncode == 1 and "name_taken" in taken.stderr

    text = "meet at the usual place, 7pm — bring the documents"
    files = {}
    for kind, suffix, size in (("photo", ".jpg", 300_000), ("video", ".mp4", 2_000_000),
                               ("voice", ".ogg", 40_000)):
        path = tmp_path / f"{kind}{suffix}"
        path.write_bytes(os.urandom(size))
        files[kind] = path
    sent = {"text": ok("client", "--profile", alice, "send", "bob", text)}
    for kind, path in files.items():
        sent[kind] = ok("client", "--profile", alice, f"send-{kind}", "bob", str(path))
    sent["location"] = ok("client", "--profile", alice, "send-location", "bob", "39.9042",
                          "116.4074", "--label", "Tiananmen East")

    received = json.loads(ok("client", "--profile", bob, "receive", "--wait", "3", "--json"))
    by_id = {item["id"]: item for item in received}
    assert set(by_id) == set(sent.values())
    assert by_id[sent["text"]]["body"]["text"] == text
    for kind, path in files.items():
        item = by_id[sent[kind]]
        assert item["kind"] == kind
        assert Path(item["file"]).read_bytes() == path.read_bytes()
    location = by_id[sent["location"]]["body"]
    assert (location["lat"], location["lon"], location["label"]) == (
        39.9042, 116.4074, "Tiananmen East")
    # Receiving again delivers nothing twice.
    assert json.loads(ok("client", "--profile", bob, "receive", "--wait", "1", "--json")) == []

    assert ok("client", "--profile", bob, "read", sent["text"]) == "read"
    assert ok("client", "--profile", bob, "read", sent["voice"]) == "played"
    ok("client", "--profile", alice, "receive", "--wait", "2")
    statuses = {entry["id"]: entry["status"] for entry in
                json.loads(ok("client", "--profile", alice, "history", "bob", "--json"))}
    assert statuses[sent["text"]] == "read"
    assert statuses[sent["voice"]] == "played"
    assert statuses[sent["photo"]] == "delivered"
    assert json.loads(ok("client", "--profile", alice, "contacts", "--json")) == ["bob"]

    # The server's database and blob folder hold none of the plaintexts.
    needles = [text.encode(), b"Tiananmen East", b"116.4074"]
    needles += [path.read_bytes()[1000:1064] for path in files.values()]
    for stored in data.rglob("*"):
        if stored.is_file():
            content = stored.read_bytes()
            for needle in needles:
                assert needle not in content, f"plaintext found in {stored}"


def test_client_errors_are_one_line(tmp_path: Path, server: tuple[str, Path]) -> None:
    address, _ = server
    unregistered = cli("client", "--profile", str(tmp_path / "nobody"), "send", "bob", "hi")
    assert unregistered.returncode == 1
    assert "not registered yet" in unregistered.stderr
    ok("client", "--profile", str(tmp_path / "carol"), "register", "carol", "--server", address)
    unknown = cli("client", "--profile", str(tmp_path / "carol"), "send", "nobody", "hi")
    assert unknown.returncode == 1
    assert "unknown_recipient" in unknown.stderr
    assert "Traceback" not in unknown.stderr + unregistered.stderr


async def test_one_time_prekeys_are_replenished(tmp_path: Path,
                                                server: tuple[str, Path]) -> None:
    address, data = server

    def stock() -> int:
        db = sqlite3.connect(data / "chat.sqlite3")
        try:
            row = db.execute("SELECT COUNT(*) FROM one_time_prekeys WHERE name = 'bob'")
            return int(row.fetchone()[0])
        finally:
            db.close()

    async with MessengerClient.open(tmp_path / "bob") as bob:
        await bob.register("bob", address)
    for index in range(35):  # each first contact takes one of bob's 50 one-time prekeys
        async with MessengerClient.open(tmp_path / f"s{index}") as sender:
            await sender.register(f"s{index}", address)
            await sender.send_text("bob", f"hello {index}")
    assert stock() == 15
    async with MessengerClient.open(tmp_path / "bob") as bob:
        received = await bob.receive(wait=2)
    assert sorted(item.entry.body["text"] for item in received) == sorted(
        f"hello {index}" for index in range(35))
    assert stock() == 50
