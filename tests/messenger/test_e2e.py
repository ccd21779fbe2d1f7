"""End-to-end encryption: X3DH first messages, Double Ratchet conversations, persistence.

Alice and Bob keep their state in real SQLite files; a fake key directory
stands in for the server (it hands out each one-time prekey once, like the
real one).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.messenger.e2e import (
    BundleError,
    DecryptionError,
    DuplicateMessageError,
    E2EError,
    E2EIdentity,
    E2ESessions,
    KeyAgreementError,
    MalformedEnvelopeError,
    NoSessionError,
    SessionConflictError,
    SqliteSessionStore,
    StateError,
    parse_bundle,
)

PREKEYS = 8


class Directory:
    """The server's key directory: long-term bundle parts plus a stock of one-time prekeys."""

    def __init__(self) -> None:
        self.bundles: dict[str, dict[str, Any]] = {}
        self.stock: dict[str, list[str]] = {}
        self.fetches = 0

    def publish(self, name: str, bundle: dict[str, Any]) -> int:
        parse_bundle(bundle)  # the directory may verify what it stores
        bundle = dict(bundle)
        self.stock.setdefault(name, []).extend(bundle.pop("one_time_prekeys"))
        self.bundles[name] = bundle
        return len(self.stock[name])

    def add_prekeys(self, name: str, keys: list[str]) -> int:
        self.stock[name].extend(keys)
        return len(self.stock[name])

    async def fetch(self, name: str) -> dict[str, Any]:
        self.fetches += 1
        bundle = dict(self.bundles[name])
        stock = self.stock[name]
        bundle["one_time_prekeys"] = [stock.pop(0)] if stock else []
        return bundle


class Party:
    """One account's profile database and E2E objects, reopenable like a restarted client."""

    def __init__(self, name: str, path: Path | None, directory: Directory) -> None:
        self.name = name
        self.path = path
        self.directory = directory
        self.db = self._connect()
        self.sessions = self._open()
        directory.publish(name, self.sessions.identity.publish_bundle())

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(":memory:" if self.path is None else self.path)

    def _open(self) -> E2ESessions:
        store = SqliteSessionStore(self.db)
        return E2ESessions(E2EIdentity.load_or_create(store, self.name, PREKEYS), store)

    def restart(self) -> None:
        """Drop every object; with a file, also close and reopen the database."""
        if self.path is not None:
            self.db.close()
            self.db = self._connect()
        self.sessions = self._open()

    async def send(self, to: Party, text: bytes) -> dict[str, Any]:
        return await self.sessions.encrypt(to.name, text, self.directory.fetch)

    async def receive(self, sender: Party, envelope: dict[str, Any]) -> bytes:
        return await self.sessions.decrypt(sender.name, envelope)


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def alice(tmp_path: Path, directory: Directory) -> Party:
    return Party("alice", tmp_path / "alice.db", directory)


@pytest.fixture
def bob(tmp_path: Path, directory: Directory) -> Party:
    return Party("bob", tmp_path / "bob.db", directory)


def tamper(envelope: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    copied = copy.deepcopy(envelope)
    change(copied)
    return copied


def flip_ct(envelope: dict[str, Any]) -> None:
    raw = bytearray(base64.b64decode(envelope["ct"]))
    raw[len(raw) // 2] ^= 0x01
    envelope["ct"] = base64.b64encode(bytes(raw)).decode()


# ---------------------------------------------------------------- first contact


async def test_first_message_then_conversation(alice: Party, bob: Party,
                                               directory: Directory) -> None:
    stock = len(directory.stock["bob"])
    first = await alice.send(bob, b"hello bob")
    assert first["x3dh"] is not None
    used = first["x3dh"]["one_time_prekey"]
    assert len(directory.stock["bob"]) == stock - 1
    assert used not in directory.stock["bob"]

    assert await bob.receive(alice, first) == b"hello bob"
    assert used not in bob.sessions.identity.publish_bundle()["one_time_prekeys"]
    assert bob.sessions.identity.one_time_prekey_count == PREKEYS - 1
    assert bob.sessions.peer_identity_key("alice") == alice.sessions.identity.identity_key
    assert alice.sessions.peer_identity_key("bob") == bob.sessions.identity.identity_key

    # Until Alice hears back, every message repeats the X3DH header.
    second = await alice.send(bob, b"still there?")
    assert second["x3dh"] == first["x3dh"]
    assert await bob.receive(alice, second) == b"still there?"

    reply = await bob.send(alice, b"hi alice")
    assert reply["x3dh"] is None
    assert await alice.receive(bob, reply) == b"hi alice"

    for i in range(5):
        text = f"alice {i}".encode()
        assert await bob.receive(alice, await alice.send(bob, text)) == text
        text = f"bob {i}".encode()
        assert await alice.receive(bob, await bob.send(alice, text)) == text
    later = await alice.send(bob, b"no header now")
    assert later["x3dh"] is None
    assert await bob.receive(alice, later) == b"no header now"
    assert directory.fetches == 1


async def test_empty_and_large_plaintexts(alice: Party, bob: Party) -> None:
    for text in (b"", b"\x00" * 1, bytes(range(256)) * 1000):
        assert await bob.receive(alice, await alice.send(bob, text)) == text
        assert await alice.receive(bob, await bob.send(alice, text)) == text


async def test_envelope_is_json_and_database_holds_no_plaintext(
        alice: Party, bob: Party, tmp_path: Path) -> None:
    import json

    secret = b"the eagle lands at midnight"
    envelope = await alice.send(bob, secret)
    wire = json.loads(json.dumps(envelope))
    assert await bob.receive(alice, wire) == secret
    assert set(envelope) == {"v", "x3dh", "ratchet", "ct"}
    assert set(envelope["ratchet"]) == {"dh", "pn", "n"}
    for party in (alice, bob):
        party.db.close()
        assert secret not in (tmp_path / f"{party.name}.db").read_bytes()
    assert secret not in json.dumps(envelope).encode()


# -------------------------------------------------------------------- restarts


async def test_restart_both_sides_mid_conversation(alice: Party, bob: Party) -> None:
    assert await bob.receive(alice, await alice.send(bob, b"one")) == b"one"
    assert await alice.receive(bob, await bob.send(alice, b"two")) == b"two"
    in_flight = await alice.send(bob, b"three")

    alice.restart()
    bob.restart()

    assert await bob.receive(alice, in_flight) == b"three"
    for i in range(3):
        text = f"after restart {i}".encode()
        assert await alice.receive(bob, await bob.send(alice, text)) == text
        assert await bob.receive(alice, await alice.send(bob, text)) == text
        alice.restart()
        bob.restart()


async def test_restart_before_first_reply_keeps_x3dh_header(alice: Party, bob: Party,
                                                            directory: Directory) -> None:
    first = await alice.send(bob, b"first")
    alice.restart()
    second = await alice.send(bob, b"second")
    assert second["x3dh"] == first["x3dh"]
    assert directory.fetches == 1
    bob.restart()
    # The first message was lost: the second alone starts Bob's side.
    assert await bob.receive(alice, second) == b"second"
    bob.restart()
    assert await bob.receive(alice, first) == b"first"
    assert await alice.receive(bob, await bob.send(alice, b"ack")) == b"ack"


# -------------------------------------------------------- out of order, skipped


async def test_out_of_order_first_flight(alice: Party, bob: Party) -> None:
    envelopes = [await alice.send(bob, f"m{i}".encode()) for i in range(1, 6)]
    for i in (5, 1, 3, 2, 4):
        assert await bob.receive(alice, envelopes[i - 1]) == f"m{i}".encode()


async def test_out_of_order_in_established_session(alice: Party, bob: Party) -> None:
    assert await bob.receive(alice, await alice.send(bob, b"hi")) == b"hi"
    assert await alice.receive(bob, await bob.send(alice, b"hey")) == b"hey"
    envelopes = [await bob.send(alice, f"b{i}".encode()) for i in range(1, 6)]
    for i in (5, 1, 3, 2, 4):
        assert await alice.receive(bob, envelopes[i - 1]) == f"b{i}".encode()


async def test_skipped_messages_arrive_late_across_ratchet_steps_and_restart(
        alice: Party, bob: Party) -> None:
    assert await bob.receive(alice, await alice.send(bob, b"start")) == b"start"
    assert await alice.receive(bob, await bob.send(alice, b"ok")) == b"ok"

    batch = [await alice.send(bob, f"a{i}".encode()) for i in range(10)]
    for i in (0, 1, 6, 7, 8, 9):  # 2..5 are delayed
        assert await bob.receive(alice, batch[i]) == f"a{i}".encode()
    # Two DH ratchet steps happen before the stragglers arrive.
    assert await alice.receive(bob, await bob.send(alice, b"reply")) == b"reply"
    assert await bob.receive(alice, await alice.send(bob, b"next")) == b"next"
    bob.restart()  # the skipped message keys are persisted
    for i in (4, 2, 5, 3):
        assert await bob.receive(alice, batch[i]) == f"a{i}".encode()
    assert await alice.receive(bob, await bob.send(alice, b"done")) == b"done"


# --------------------------------------------------------- replays and tampering


async def test_replay_is_refused(alice: Party, bob: Party) -> None:
    first = await alice.send(bob, b"first")
    assert await bob.receive(alice, first) == b"first"
    with pytest.raises(DuplicateMessageError):
        await bob.receive(alice, first)  # the first message, X3DH header and all

    reply = await bob.send(alice, b"reply")
    assert await alice.receive(bob, reply) == b"reply"
    with pytest.raises(E2EError):
        await alice.receive(bob, reply)

    old = await alice.send(bob, b"old")
    assert await bob.receive(alice, old) == b"old"
    # Ratchet forward a few times, then replay (the key is long gone).
    for i in range(3):
        assert await alice.receive(bob, await bob.send(alice, b"x")) == b"x"
        assert await bob.receive(alice, await alice.send(bob, f"{i}".encode())) == f"{i}".encode()
    bob.restart()
    with pytest.raises(E2EError):
        await bob.receive(alice, old)
    with pytest.raises(E2EError):
        await bob.receive(alice, first)
    # A refused message changes nothing: the conversation goes on.
    assert await bob.receive(alice, await alice.send(bob, b"fine")) == b"fine"


async def test_replayed_skipped_message_is_refused(alice: Party, bob: Party) -> None:
    envelopes = [await alice.send(bob, f"m{i}".encode()) for i in range(3)]
    assert await bob.receive(alice, envelopes[2]) == b"m2"
    assert await bob.receive(alice, envelopes[0]) == b"m0"
    with pytest.raises(E2EError):
        await bob.receive(alice, envelopes[0])
    with pytest.raises(DuplicateMessageError):
        await bob.receive(alice, envelopes[2])
    assert await bob.receive(alice, envelopes[1]) == b"m1"


@pytest.mark.parametrize("change", [
    flip_ct,
    lambda e: e.update(ct=base64.b64encode(base64.b64decode(e["ct"])[:-1]).decode()),
    lambda e: e["ratchet"].update(n=e["ratchet"]["n"] + 1),
    lambda e: e["ratchet"].update(pn=e["ratchet"]["pn"] + 1),
    lambda e: e["ratchet"].update(dh=base64.b64encode(b"\x09" * 32).decode()),
], ids=["ciphertext", "truncated", "counter", "previous-counter", "ratchet-key"])
async def test_tampered_envelope_is_refused(alice: Party, bob: Party,
                                            change: Callable[[dict[str, Any]], None]) -> None:
    assert await bob.receive(alice, await alice.send(bob, b"hi")) == b"hi"
    assert await alice.receive(bob, await bob.send(alice, b"hey")) == b"hey"
    envelope = await alice.send(bob, b"genuine")
    with pytest.raises(DecryptionError):
        await bob.receive(alice, tamper(envelope, change))
    bob.restart()
    assert await bob.receive(alice, envelope) == b"genuine"


async def test_tampered_first_message_does_not_burn_the_prekey(alice: Party, bob: Party) -> None:
    first = await alice.send(bob, b"first")
    with pytest.raises(DecryptionError):
        await bob.receive(alice, tamper(first, flip_ct))
    assert bob.sessions.identity.one_time_prekey_count == PREKEYS
    assert not bob.sessions.has_session("alice")
    assert await bob.receive(alice, first) == b"first"
    assert bob.sessions.identity.one_time_prekey_count == PREKEYS - 1


async def test_associated_data_binds_sender_and_recipient(alice: Party, bob: Party,
                                                          directory: Directory,
                                                          tmp_path: Path) -> None:
    carol = Party("carol", tmp_path / "carol.db", directory)
    first = await alice.send(bob, b"for bob from alice")
    # The server claims carol sent it: the names are in the associated data.
    with pytest.raises(DecryptionError):
        await bob.receive(carol, first)
    assert await bob.receive(alice, first) == b"for bob from alice"
    assert await alice.receive(bob, await bob.send(alice, b"hey")) == b"hey"

    later = await alice.send(bob, b"second")
    # Reflected back to its sender as if bob had sent it.
    with pytest.raises(DecryptionError):
        await alice.receive(bob, later)
    # Delivered to carol, who has no session with alice.
    with pytest.raises(NoSessionError):
        await carol.receive(alice, later)
    assert await bob.receive(alice, later) == b"second"


@pytest.mark.parametrize("envelope", [
    [],
    {},
    {"v": 2},
    {"v": 1, "x3dh": None, "ratchet": {"dh": "AA==", "pn": 0, "n": 0}, "ct": "AAAA"},
    {"v": 1, "x3dh": None, "ratchet": {"dh": "A" * 43 + "=", "pn": -1, "n": 0}, "ct": "AAAA"},
    {"v": 1, "x3dh": None, "ratchet": {"dh": "A" * 43 + "=", "pn": 0, "n": True}, "ct": "AAAA"},
    {"v": 1, "x3dh": None, "ratchet": {"dh": "A" * 43 + "=", "pn": 0, "n": 0}, "ct": ""},
    {"v": 1, "x3dh": None, "ratchet": {"dh": "A" * 43 + "=", "pn": 0, "n": 0}, "ct": "!!"},
    {"v": 1, "x3dh": "yes", "ratchet": {"dh": "A" * 43 + "=", "pn": 0, "n": 0}, "ct": "AAAA"},
    {"v": 1, "x3dh": {"identity_key": "AA=="},
     "ratchet": {"dh": "A" * 43 + "=", "pn": 0, "n": 0}, "ct": "AAAA"},
    {"v": 1, "x3dh": None, "ratchet": [], "ct": "AAAA"},
])
async def test_malformed_envelope(alice: Party, bob: Party, envelope: Any) -> None:
    with pytest.raises(MalformedEnvelopeError):
        await bob.receive(alice, envelope)


async def test_garbage_first_message_keys_are_refused(alice: Party, bob: Party) -> None:
    first = await alice.send(bob, b"first")
    zero = base64.b64encode(b"\x00" * 32).decode()
    for field in ("identity_key", "ephemeral_key", "signed_prekey", "one_time_prekey"):
        bad = copy.deepcopy(first)
        bad["x3dh"][field] = zero
        with pytest.raises(E2EError):
            await bob.receive(alice, bad)
    assert await bob.receive(alice, first) == b"first"


async def test_non_initial_message_without_session(alice: Party, bob: Party,
                                                   directory: Directory,
                                                   tmp_path: Path) -> None:
    assert await bob.receive(alice, await alice.send(bob, b"hi")) == b"hi"
    assert await alice.receive(bob, await bob.send(alice, b"hey")) == b"hey"
    envelope = await alice.send(bob, b"no header")
    bob.sessions.reset_session("alice")
    with pytest.raises(NoSessionError):
        await bob.receive(alice, envelope)


# --------------------------------------------------------- one-time prekeys


async def test_one_time_prekey_is_consumed_exactly_once(alice: Party, bob: Party,
                                                        directory: Directory,
                                                        tmp_path: Path) -> None:
    """A second initiator using an already-used one-time prekey fails with KeyAgreementError.

    This is what the X3DH library specifies: the passive side deletes the
    prekey after the first agreement, and a later agreement naming it raises
    ``KeyAgreementException`` ("uses a pre key that is not available any
    more"). The real directory never hands a prekey out twice; this test
    plays a faulty (or malicious) one that does.
    """
    carol = Party("carol", tmp_path / "carol.db", directory)
    bundle = await directory.fetch("bob")

    async def same_bundle(name: str) -> dict[str, Any]:
        return bundle

    from_alice = await alice.sessions.encrypt("bob", b"from alice", same_bundle)
    from_carol = await carol.sessions.encrypt("bob", b"from carol", same_bundle)
    used = from_alice["x3dh"]["one_time_prekey"]
    assert from_carol["x3dh"]["one_time_prekey"] == used

    assert await bob.receive(alice, from_alice) == b"from alice"
    bob.restart()  # the deletion is persisted with the session
    assert used not in bob.sessions.identity.publish_bundle()["one_time_prekeys"]
    with pytest.raises(KeyAgreementError):
        await bob.receive(carol, from_carol)
    assert not bob.sessions.has_session("carol")

    # Alice's first message replayed after Bob reset the session: refused
    # as a replay (its ephemeral key is remembered)...
    bob.sessions.reset_session("alice")
    with pytest.raises(DuplicateMessageError):
        await bob.receive(alice, from_alice)
    # ...and even with Bob's whole record for alice gone, the prekey is gone
    # too, so it cannot start a session again.
    SqliteSessionStore(bob.db).delete_session("alice")
    with pytest.raises(KeyAgreementError):
        await bob.receive(alice, from_alice)

    # Carol starts over with a fresh bundle and gets through.
    carol.sessions.reset_session("bob")
    assert await bob.receive(carol, await carol.send(bob, b"again")) == b"again"


async def test_bundle_without_one_time_prekey(alice: Party, bob: Party,
                                              directory: Directory) -> None:
    directory.stock["bob"].clear()
    first = await alice.send(bob, b"no otpk")
    assert first["x3dh"]["one_time_prekey"] is None
    assert await bob.receive(alice, first) == b"no otpk"
    assert bob.sessions.identity.one_time_prekey_count == PREKEYS
    with pytest.raises(DuplicateMessageError):
        await bob.receive(alice, first)
    assert await alice.receive(bob, await bob.send(alice, b"ok")) == b"ok"


async def test_bundle_replenishment(alice: Party, bob: Party, directory: Directory,
                                    tmp_path: Path) -> None:
    identity = bob.sessions.identity
    assert not identity.needs_replenish(5, available=len(directory.stock["bob"]))
    others = [Party(f"user{i}", tmp_path / f"user{i}.db", directory) for i in range(5)]
    for other in others:
        assert await bob.receive(other, await other.send(bob, b"hi")) == b"hi"
    available = len(directory.stock["bob"])
    assert available == PREKEYS - 5
    assert identity.one_time_prekey_count == PREKEYS - 5
    assert identity.needs_replenish(5, available=available)
    assert identity.needs_replenish(5)  # local count alone

    new = bob.sessions.top_up_one_time_prekeys(10)
    assert len(new) == len(set(new)) == 10
    assert set(new) <= set(identity.publish_bundle()["one_time_prekeys"])
    assert not set(new) & set(directory.stock["bob"])
    assert directory.add_prekeys("bob", new) == available + 10
    assert not identity.needs_replenish(5, available=len(directory.stock["bob"]))

    bob.restart()  # the new private keys were saved before being published
    assert bob.sessions.identity.one_time_prekey_count == PREKEYS - 5 + 10
    directory.stock["bob"] = list(new)
    assert await bob.receive(alice, await alice.send(bob, b"new key")) == b"new key"
    assert bob.sessions.identity.one_time_prekey_count == PREKEYS - 5 + 9


async def test_signed_prekey_rotation(alice: Party, bob: Party, directory: Directory,
                                      tmp_path: Path) -> None:
    assert not bob.sessions.rotate_signed_prekey_if_due()
    stale = await directory.fetch("bob")
    old_spk = stale["signed_prekey"]
    assert bob.sessions.rotate_signed_prekey_if_due(force=True)
    update = bob.sessions.identity.publish_bundle(include_one_time_prekeys=False)
    assert update["one_time_prekeys"] == []
    assert update["signed_prekey"] != old_spk
    directory.publish("bob", update)

    async def stale_bundle(name: str) -> dict[str, Any]:
        return stale

    # A first message built on the previous signed prekey still works...
    bob.restart()
    first = await alice.sessions.encrypt("bob", b"old spk", stale_bundle)
    assert await bob.receive(alice, first) == b"old spk"

    # ...but not on one rotated out twice.
    carol = Party("carol", tmp_path / "carol.db", directory)
    assert bob.sessions.rotate_signed_prekey_if_due(max_age=-1)
    late = await carol.sessions.encrypt("bob", b"too old", stale_bundle)
    with pytest.raises(KeyAgreementError):
        await bob.receive(carol, late)
    carol.sessions.reset_session("bob")
    directory.publish("bob", bob.sessions.identity.publish_bundle(False))
    assert await bob.receive(carol, await carol.send(bob, b"fresh")) == b"fresh"


@pytest.mark.parametrize("change", [
    lambda b: b.update(signed_prekey_signature=base64.b64encode(b"\x01" * 64).decode()),
    lambda b: b.update(signed_prekey=base64.b64encode(b"\x02" * 32).decode()),
    lambda b: b.update(identity_key="not base64!"),
    lambda b: b.update(one_time_prekeys="AAAA"),
    lambda b: b.pop("signed_prekey"),
    lambda b: b["one_time_prekeys"].append(base64.b64encode(b"\x03" * 32).decode()),
], ids=["signature", "swapped-prekey", "base64", "list", "missing", "two-prekeys"])
async def test_bad_bundle_is_refused(alice: Party, bob: Party, directory: Directory,
                                     change: Callable[[dict[str, Any]], None]) -> None:
    bundle = await directory.fetch("bob")
    change(bundle)

    async def fetch(name: str) -> dict[str, Any]:
        return bundle

    with pytest.raises(BundleError):
        await alice.sessions.encrypt("bob", b"x", fetch)
    assert not alice.sessions.has_session("bob")


# -------------------------------------------------------------- odd situations


async def test_simultaneous_first_messages(alice: Party, bob: Party) -> None:
    from_alice = await alice.send(bob, b"a1")
    from_bob = await bob.send(alice, b"b1")
    assert from_alice["x3dh"] is not None and from_bob["x3dh"] is not None
    assert await bob.receive(alice, from_alice) == b"a1"
    assert await alice.receive(bob, from_bob) == b"b1"
    for i in range(3):
        a, b = await alice.send(bob, f"a{i}".encode()), await bob.send(alice, f"b{i}".encode())
        assert await bob.receive(alice, a) == f"a{i}".encode()
        assert await alice.receive(bob, b) == f"b{i}".encode()
    # Both sides settle on sessions the other has, and stop sending X3DH headers.
    assert (await alice.send(bob, b"z"))["x3dh"] is None
    assert (await bob.send(alice, b"z"))["x3dh"] is None


async def test_peer_starts_over_with_new_identity(alice: Party, bob: Party,
                                                  directory: Directory,
                                                  tmp_path: Path) -> None:
    assert await bob.receive(alice, await alice.send(bob, b"hi")) == b"hi"
    assert await alice.receive(bob, await bob.send(alice, b"hey")) == b"hey"
    old_key = bob.sessions.peer_identity_key("alice")
    reinstalled = Party("alice", tmp_path / "alice-new.db", directory)
    assert await bob.receive(reinstalled, await reinstalled.send(bob, b"new phone")) \
        == b"new phone"
    assert bob.sessions.peer_identity_key("alice") != old_key
    assert await reinstalled.receive(bob, await bob.send(reinstalled, b"welcome")) == b"welcome"


async def test_two_processes_share_a_profile(alice: Party, bob: Party, tmp_path: Path) -> None:
    assert alice.path is not None
    assert await bob.receive(alice, await alice.send(bob, b"hi")) == b"hi"
    assert await alice.receive(bob, await bob.send(alice, b"hey")) == b"hey"
    # A second "process" on the same profile file: both reload state per message.
    second_db = sqlite3.connect(alice.path)
    store = SqliteSessionStore(second_db)
    other = E2ESessions(E2EIdentity.load_or_create(store, "alice"), store)
    e1 = await alice.send(bob, b"from process 1")
    e2 = await other.encrypt("bob", b"from process 2", alice.directory.fetch)
    e3 = await alice.send(bob, b"from process 1 again")
    assert e1["ratchet"]["n"] < e2["ratchet"]["n"] < e3["ratchet"]["n"]
    assert await bob.receive(alice, e3) == b"from process 1 again"
    assert await bob.receive(alice, e1) == b"from process 1"
    assert await bob.receive(alice, e2) == b"from process 2"
    # A stale compare-and-swap is refused rather than forking the ratchet.
    stored = store.load_session("bob")
    assert stored is not None
    store.save_session("bob", stored.state, stored.version)
    with pytest.raises(SessionConflictError):
        store.save_session("bob", stored.state, stored.version)
    with pytest.raises(SessionConflictError):
        store.save_session("bob", stored.state, None)
    second_db.close()


async def test_concurrent_encrypts_in_one_process(alice: Party, bob: Party) -> None:
    envelopes = await asyncio.gather(*(alice.send(bob, f"m{i}".encode()) for i in range(6)))
    for i, envelope in reversed(list(enumerate(envelopes))):
        assert await bob.receive(alice, envelope) == f"m{i}".encode()


async def test_identity_state_round_trip_and_errors(alice: Party, tmp_path: Path) -> None:
    identity = alice.sessions.identity
    restored = E2EIdentity.from_json(identity.to_json())
    assert restored.identity_key == identity.identity_key
    assert restored.publish_bundle() == identity.publish_bundle()
    assert restored.account == "alice"
    assert len(identity.fingerprint.replace(" ", "")) == 64
    for bad in ("", "[]", '{"v": 2}', '{"v": 1, "account": "x", "x3dh": {}}'):
        with pytest.raises(StateError):
            E2EIdentity.from_json(bad)
    store = SqliteSessionStore(alice.db)
    with pytest.raises(StateError):
        E2EIdentity.load_or_create(store, "mallory")
    with pytest.raises(StateError):
        E2ESessions(E2EIdentity.create("alice", 1), store)
    with pytest.raises(E2EError):
        await alice.sessions.encrypt("alice", b"me", alice.directory.fetch)
    with pytest.raises(E2EError):
        await alice.sessions.encrypt("", b"nobody", alice.directory.fetch)


def test_tables_are_prefixed_and_share_the_database(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "profile.db")
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.commit()
    SqliteSessionStore(db)
    SqliteSessionStore(db)  # idempotent
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"contacts", "e2e_identity", "e2e_sessions"}
    # A caller's open transaction absorbs the store's writes (it commits them itself).
    db.execute("INSERT INTO contacts VALUES ('x')")
    store = SqliteSessionStore(db)
    store.save_identity("{}", None)
    assert db.in_transaction
    db.rollback()
    assert store.load_identity() is None


# ----------------------------------------------------------------- property


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from([0, 1]), st.just(0)),
        st.tuples(st.just("deliver"), st.sampled_from([0, 1]), st.integers(0, 30)),
        st.tuples(st.just("replay"), st.sampled_from([0, 1]), st.integers(0, 30)),
        st.tuples(st.just("restart"), st.sampled_from([0, 1]), st.just(0)),
    ),
    min_size=8,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_random_interleavings_always_decrypt(ops: list[tuple[str, int, int]]) -> None:
    """Any mix of sends, reordered deliveries, replays and restarts by two parties.

    Every delivered message decrypts to what was sent; every replay is refused;
    in the end all messages still in flight are delivered too.
    """
    asyncio.run(_run_interleaving(ops))


async def _run_interleaving(ops: list[tuple[str, int, int]]) -> None:
    directory = Directory()
    parties = [Party("alice", None, directory), Party("bob", None, directory)]
    in_flight: list[list[tuple[dict[str, Any], bytes]]] = [[], []]  # per recipient
    delivered: list[list[dict[str, Any]]] = [[], []]
    counter = 0

    async def deliver(to: int, index: int) -> None:
        queue = in_flight[to]
        envelope, text = queue.pop(index % len(queue))
        assert await parties[to].receive(parties[1 - to], envelope) == text
        delivered[to].append(envelope)

    for op, who, index in ops:
        if op == "send":
            counter += 1
            text = f"{parties[who].name} {counter}".encode()
            envelope = await parties[who].send(parties[1 - who], text)
            in_flight[1 - who].append((envelope, text))
        elif op == "deliver" and in_flight[who]:
            await deliver(who, index)
        elif op == "replay" and delivered[who]:
            old = delivered[who][index % len(delivered[who])]
            with pytest.raises(E2EError):
                await parties[who].receive(parties[1 - who], old)
        elif op == "restart":
            parties[who].restart()
    for to in (0, 1):
        while in_flight[to]:
            await deliver(to, len(in_flight[to]) - 1)


async def _established(alice: Party, bob: Party) -> None:
    """A session both sides have used, so later messages carry no X3DH header."""
    await bob.receive(alice, await alice.send(bob, b"hello"))
    await alice.receive(bob, await bob.send(alice, b"hi"))


async def test_deferred_decrypts_are_saved_by_persist_and_redone_after_discard(
    alice: Party, bob: Party
) -> None:
    await _established(alice, bob)
    first, second, third = [await alice.send(bob, b"m%d" % n) for n in range(3)]
    assert await bob.sessions.decrypt("alice", first, persist=False) == b"m0"
    bob.restart()  # never persisted: the new objects decrypt it again
    assert await bob.sessions.decrypt("alice", first, persist=False) == b"m0"
    assert await bob.sessions.decrypt("alice", second, persist=False) == b"m1"
    bob.sessions.persist()
    bob.db.commit()
    bob.restart()
    with pytest.raises(DuplicateMessageError):
        await bob.receive(alice, first)
    assert await bob.sessions.decrypt("alice", third, persist=False) == b"m2"
    bob.sessions.discard_unsaved()  # e.g. the caller's transaction failed
    assert await bob.receive(alice, third) == b"m2"


async def test_encrypt_undoes_the_ratchet_step_when_on_saved_fails(
    alice: Party, bob: Party
) -> None:
    await _established(alice, bob)
    seen: list[dict[str, Any]] = []

    def fail(envelope: dict[str, Any]) -> None:
        seen.append(envelope)
        raise RuntimeError("the caller's write failed")

    with pytest.raises(RuntimeError):
        await alice.sessions.encrypt("bob", b"lost", alice.directory.fetch, on_saved=fail)
    alice.restart()  # what is on disk: the step before the failed one
    kept = await alice.sessions.encrypt("bob", b"kept", alice.directory.fetch)
    assert kept["ratchet"]["n"] == seen[0]["ratchet"]["n"]  # the rolled-back step again
    assert await bob.receive(alice, kept) == b"kept"


async def test_ratchet_state_copies_are_deep_and_refuse_unknown_state(
    alice: Party, bob: Party
) -> None:
    from noisewall.messenger.e2e.primitives import clone_state

    await _established(alice, bob)
    record, _ = alice.sessions._load("bob")
    ratchet = record.sessions[0].ratchet
    dh = ratchet._DoubleRatchet__diffie_hellman_ratchet  # type: ignore[attr-defined]
    before = dh.model.model_dump_json()
    clone = copy.deepcopy(dh)
    assert clone.model.model_dump_json() == before
    await clone.next_encryption_key()  # advancing the copy...
    assert dh.model.model_dump_json() == before  # ...leaves the original alone
    assert clone.model.model_dump_json() != before

    class Holder:
        def __init__(self) -> None:
            self.keys = [b"mutable"]

    with pytest.raises(TypeError, match="list"):
        clone_state(Holder())
