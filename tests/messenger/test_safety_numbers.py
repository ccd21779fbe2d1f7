"""A changed identity key: refused before anything is encrypted to it, shown, accepted, verified.

The real chat and media servers run in this process on loopback; the clients
are real :class:`MessengerClient` objects, and the CLI runs as ``noisewall``
processes on the same profiles. The changed key comes from a second profile
that holds Bob's server credentials (his Noise static key) but a new
end-to-end identity: what a server that hands Bob's name to someone else, or
Bob on a new phone, looks like to Alice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.messenger.client import MessengerClient
from noisewall.messenger.e2e import IdentityChangedError, SqliteSessionStore, fingerprint
from noisewall.messenger.e2e.safety import safety_number
from tests.messenger.loopback_messenger import running_messenger

# libsignal's NumericFingerprintGeneratorTest vectors (keys in Signal's 33-byte form).
SIGNAL_ALICE = ("+14152222222", bytes.fromhex(
    "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")[1:])
SIGNAL_BOB = ("+14153333333", bytes.fromhex(
    "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")[1:])
SIGNAL_DISPLAYABLE = "300354477692869396892869876765458257569162576843440918079131"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewall", "client", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.returncode == 0, f"{args}: {result.stderr}"
    return result.stdout


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    async with running_messenger(tmp_path / "server") as address:
        yield address


def test_safety_numbers_are_signals() -> None:
    assert safety_number(SIGNAL_ALICE, SIGNAL_BOB) == SIGNAL_DISPLAYABLE
    assert safety_number(SIGNAL_BOB, SIGNAL_ALICE) == SIGNAL_DISPLAYABLE


async def _texts(client: MessengerClient) -> list[tuple[str, bool]]:
    return [(item.entry.body["text"], item.key_changed)
            for item in await client.receive(wait=0.5) if item.entry.kind == "text"]


async def test_a_changed_identity_key_is_refused_until_accepted(tmp_path: Path,
                                                                server: str) -> None:
    alice_dir, bob_dir, new_dir = tmp_path / "alice", tmp_path / "bob", tmp_path / "new-bob"
    async with MessengerClient.open(alice_dir) as alice, MessengerClient.open(bob_dir) as bob:
        await alice.register("alice", server)
        await bob.register("bob", server)
        await alice.send_text("bob", "hi bob")
        assert await _texts(bob) == [("hi bob", False)]
        await bob.send_text("alice", "hi alice")
        assert await _texts(alice) == [("hi alice", False)]
        bob_key, bob_noise = bob.identity.identity_key, bob.profile.require("noise_private")
        trusted = alice.key_book.get("bob")
        assert trusted is not None and trusted.identity_key == bob_key and not trusted.verified

    async with MessengerClient.open(new_dir) as new_bob:
        new_bob.profile.set("noise_private", bob_noise)  # the server sees Bob's account
        await new_bob.register("bob", server)
        new_key = new_bob.identity.identity_key
        assert new_key != bob_key
        await new_bob.send_text("alice", "new phone, same bob")

    async with MessengerClient.open(alice_dir) as alice:
        # Shown, and flagged: the sender's key is not the trusted one.
        assert await _texts(alice) == [("new phone, same bob", True)]
        trusted = alice.key_book.get("bob")
        assert trusted is not None
        assert (trusted.identity_key, trusted.changed_key) == (bob_key, new_key)
        sessions = SqliteSessionStore(alice.profile.db)
        version = sessions.session_version("bob")
        with pytest.raises(IdentityChangedError):
            await alice.send_text("bob", "the plan")
        # Nothing was encrypted: no ratchet step saved, nothing queued or recorded.
        assert sessions.session_version("bob") == version
        assert alice.profile.outbox() == []
        assert "the plan" not in [entry.body.get("text") for entry in alice.profile.history()]

    refused = cli("--profile", str(alice_dir), "send", "bob", "the plan")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "accept-key bob" in refused.stderr
    assert "Traceback" not in refused.stderr
    shown = ok("--profile", str(alice_dir), "fingerprint", "bob")
    assert fingerprint(bob_key) in shown and fingerprint(new_key) in shown
    assert "WARNING: the identity key of bob changed" in shown

    assert "accepted" in ok("--profile", str(alice_dir), "accept-key", "bob")
    mine = json.loads(ok("--profile", str(alice_dir), "fingerprint", "bob", "--json"))["peer"]
    theirs = json.loads(ok("--profile", str(new_dir), "fingerprint", "alice", "--json"))["peer"]
    assert mine["safety_number"] == theirs["safety_number"]  # both ends show the same digits
    assert mine["fingerprint"] == fingerprint(new_key) and "changed_key" not in mine
    wrong = mine["safety_number"].replace(mine["safety_number"][0],
                                          str((int(mine["safety_number"][0]) + 1) % 10), 1)
    mismatch = cli("--profile", str(alice_dir), "verify", "bob", "--safety-number", wrong)
    assert mismatch.returncode == 1 and "differ" in mismatch.stderr
    assert "bob verified" in ok("--profile", str(alice_dir), "verify", "bob",
                                "--safety-number", theirs["safety_number"])
    assert json.loads(ok("--profile", str(alice_dir), "fingerprint", "bob",
                         "--json"))["peer"]["verified"] is True

    async with MessengerClient.open(alice_dir) as alice:
        await alice.send_text("bob", "after accepting")
    async with MessengerClient.open(new_dir) as new_bob:
        assert ("after accepting", False) in await _texts(new_bob)
