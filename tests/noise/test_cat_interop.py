"""``noisewall noise cat`` (a real subprocess) against the independent peer in nsock_peer.py.

* ``--listen --echo``: the independent client handshakes (NN, NK, XX, IK, with
  and without ``--pad 32``), sends messages (one needs several fragments) and
  checks every echo, the padding of every received payload and the closing.
* ``--connect``: the real CLI client pipes stdin to the independent echo
  listener and must print exactly its stdin.
* Garbage and protocol violations on one connection must not take the echo
  listener down.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.noise.nsock_peer import (
    MAX_FRAGMENT,
    EchoListener,
    NoiseSocketPeer,
    PeerClosed,
    ReceivedPayload,
    Rejected,
    connect,
    padded_len,
)

HOST = "127.0.0.1"
TIMEOUT = 10.0
NOISEWALL = [sys.executable, "-c", "from noisewall.cli import main; main()"]
SUITE = "25519_AESGCM_SHA256"
PATTERNS = ["NN", "NK", "XX", "IK"]
#: Patterns where the initiator must know the responder's static key in advance.
KNOWS_SERVER_KEY = {"NK", "IK"}
#: Patterns where the initiator sends a static key.
CLIENT_STATIC = {"XX", "IK"}
PAD = 32
LISTENING = re.compile(r"listening on (\S+):(\d+)")


def protocol_name(pattern: str) -> str:
    return f"Noise_{pattern}_{SUITE}"


@dataclass(frozen=True)
class StaticKey:
    private: bytes
    public: bytes
    path: Path


def make_key(path: Path) -> StaticKey:
    private_key = X25519PrivateKey.generate()
    private = private_key.private_bytes_raw()
    path.write_text(private.hex() + "\n")
    return StaticKey(private, private_key.public_key().public_bytes_raw(), path)


@pytest.fixture(scope="module")
def server_key(tmp_path_factory: pytest.TempPathFactory) -> StaticKey:
    """The listener's static key, made by ``noisewall noise keygen --json``."""
    result = subprocess.run(
        [*NOISEWALL, "noise", "keygen", "--json"],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    doc = json.loads(result.stdout)
    assert doc["dh"] == "25519"
    private = bytes.fromhex(doc["private"])
    public = bytes.fromhex(doc["public"])
    derived = X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()
    assert derived == public, "keygen printed a public key that does not match its private key"
    path = tmp_path_factory.mktemp("keys") / "server.key"
    path.write_text(doc["private"] + "\n")
    return StaticKey(private, public, path)


@pytest.fixture
def client_key(tmp_path: Path) -> StaticKey:
    return make_key(tmp_path / "client.key")


# --- subprocess helpers ------------------------------------------------


@dataclass
class Listener:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    stderr: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.proc.poll() is None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def cat_listener(*args: str) -> Iterator[Listener]:
    """``noisewall noise cat --listen 127.0.0.1:0 --echo ARGS``; yields once it listens."""
    proc = subprocess.Popen(
        [*NOISEWALL, "noise", "cat", "--listen", f"{HOST}:0", "--echo", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:  # ends at EOF, when the process exits
            line = raw.decode("utf-8", "replace").rstrip("\n")
            seen.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        match = None
        while match is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"listener did not report 'listening on' in {TIMEOUT} s: {seen}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"listener exited ({proc.wait(timeout=5)}) before listening: {seen}")
            match = LISTENING.search(line)
        assert match.group(1) == HOST
        port = int(match.group(2))
        assert port > 0
        yield Listener(proc, HOST, port, seen)
    finally:
        _stop(proc)
        reader.join(timeout=5)


def run_connector(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    """``noisewall noise cat --connect ...`` with ``data`` on stdin; always reaped."""
    proc = subprocess.Popen(
        [*NOISEWALL, "noise", "cat", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = proc.communicate(data, timeout=20)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    finally:
        _stop(proc)


# --- checks ------------------------------------------------------------


def check_padding(received: list[ReceivedPayload], pad: int) -> None:
    """Every encrypted payload received must be padded exactly as the README says."""
    encrypted = [r for r in received if r.encrypted]
    assert encrypted, "no encrypted payload received"
    for record in encrypted:
        expected = padded_len(record.body_len, pad)
        assert record.body_len + record.padding_len == expected, (
            f"{record.stage} payload: body {record.body_len} + padding {record.padding_len}"
            f" != {expected} (pad {pad})"
        )
        assert record.padding_is_zero, f"{record.stage} padding is not zero bytes"
        assert record.noise_message_len >= 2 + expected + 16


def check_explicit_reject_or_nothing(data: bytes) -> None:
    """Bob's answer to a bad first message: nothing (silent reject) or one explicit reject.

    Explicit reject (spec 3, README table): negotiation data with a reason that
    does not start with ``Noise_``, an empty noise message, then the close.
    """
    if not data:
        return
    assert len(data) >= 4, f"truncated answer {data!r}"
    (nd_len,) = struct.unpack(">H", data[:2])
    reason = data[2 : 2 + nd_len]
    assert len(reason) == nd_len > 0, f"answer {data!r}"
    assert not reason.startswith(b"Noise_"), f"not a reject: {data!r}"
    assert data[2 + nd_len :] == b"\x00\x00", f"reject must carry an empty message: {data!r}"


def drain_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the peer sends until it closes (EOF or reset); fails on timeout."""
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(data) < 1 << 20:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        except TimeoutError:
            break
        if not chunk:
            return bytes(data)
        data += chunk
    pytest.fail(f"connection not closed within {timeout} s (got {bytes(data[:64])!r})")


MESSAGES = [
    b"hello, noisewall",
    b"",  # an empty application message: a body that is just the 0x00 flag
    b"\x00\x01 binary \xff\xfe and a newline\n",
    bytes(range(256)) * 16,
    os.urandom(MAX_FRAGMENT),  # exactly one full fragment
    os.urandom(MAX_FRAGMENT + 1),  # one byte too many: two fragments
    os.urandom(150_000),  # > 65535: three fragments
]


def exchange_and_check(peer: NoiseSocketPeer, messages: list[bytes]) -> None:
    for message in messages:
        before = len(peer.transport_flags())
        sent = peer.send_message(message)
        assert sent == max(1, -(-len(message) // MAX_FRAGMENT))
        echo = peer.receive_message()
        assert echo is not None, "listener closed instead of echoing"
        assert len(echo) == len(message)
        assert echo == message
        flags = peer.transport_flags()[before:]
        # Each echo fragment is flagged: 0x01 while more follow, 0x00 on the last.
        assert flags[-1] == 0x00
        assert all(flag == 0x01 for flag in flags[:-1])
        if len(message) > MAX_FRAGMENT:
            assert len(flags) >= 2, "a message over one body came back unfragmented"


# --- noise cat --listen --echo vs the independent client ----------------


@pytest.mark.parametrize("pad", [0, PAD], ids=["nopad", "pad32"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_listener_echo(
    pattern: str, pad: int, server_key: StaticKey, client_key: StaticKey
) -> None:
    name = protocol_name(pattern)
    args = ["--protocol", name, "--static-key", str(server_key.path)]
    if pad:
        args += ["--pad", str(pad)]
    with cat_listener(*args) as listener:
        peer = connect(
            listener.host,
            listener.port,
            protocol=name,
            static_private=client_key.private if pattern in CLIENT_STATIC else None,
            remote_static=server_key.public if pattern in KNOWS_SERVER_KEY else None,
            pad=pad,
        )
        with peer.sock:
            assert peer.handshake_hash is not None
            if pattern in ("XX", "IK", "NK"):
                assert peer.remote_static == server_key.public
            exchange_and_check(peer, MESSAGES)
            if pad:
                check_padding(peer.received, pad)
            else:
                assert all(r.padding_len == 0 for r in peer.received), "padding without --pad"
            # End of session: our FIN at a frame boundary; the listener closes its side.
            peer.close_write()
            peer.expect_eof()
        assert listener.alive(), f"echo listener exited: {listener.stderr}"


def test_listener_serves_concurrent_clients(server_key: StaticKey) -> None:
    name = protocol_name("XX")
    with cat_listener("--protocol", name, "--static-key", str(server_key.path)) as listener:
        keys = [X25519PrivateKey.generate().private_bytes_raw() for _ in range(3)]
        peers = [
            connect(listener.host, listener.port, protocol=name, static_private=key) for key in keys
        ]
        try:
            hashes = {peer.handshake_hash for peer in peers}
            assert len(hashes) == 3
            for round_ in range(3):  # interleave the clients
                for index, peer in enumerate(peers):
                    message = f"round {round_} client {index}".encode()
                    peer.send_message(message)
                for index, peer in enumerate(peers):
                    assert peer.receive_message() == f"round {round_} client {index}".encode()
            for peer in peers:
                peer.close_write()
                peer.expect_eof()
        finally:
            for peer in peers:
                peer.sock.close()
        assert listener.alive()


def test_listener_application_prologue(server_key: StaticKey, client_key: StaticKey) -> None:
    name = protocol_name("XX")
    text = "app prologue \u00e9\u4e16"  # UTF-8, per the README
    args = ["--protocol", name, "--static-key", str(server_key.path), "--prologue", text]
    with cat_listener(*args) as listener:
        peer = connect(
            listener.host,
            listener.port,
            protocol=name,
            static_private=client_key.private,
            prologue=text.encode("utf-8"),
        )
        with peer.sock:
            exchange_and_check(peer, [b"prologue ok"])
        # A different application prologue must make the handshake fail.
        with pytest.raises(Exception) as excinfo:
            bad = connect(
                listener.host,
                listener.port,
                protocol=name,
                static_private=client_key.private,
                prologue=b"another prologue",
            )
            bad.sock.close()
        assert type(excinfo.value).__name__ in ("InvalidTag", "PeerClosed", "NoiseInvalidMessage")
        assert listener.alive()


def test_listener_rejects_a_protocol_it_does_not_run(server_key: StaticKey) -> None:
    """The listener runs XX; an NN offer must not complete (any rejection is fine)."""
    args = ["--protocol", protocol_name("XX"), "--static-key", str(server_key.path)]
    with cat_listener(*args) as listener:
        with pytest.raises(Rejected) as excinfo:
            peer = connect(listener.host, listener.port, protocol=protocol_name("NN"))
            peer.sock.close()
        # Explicit reject (a reason, not a protocol name) or a retry request for XX.
        if excinfo.value.kind == "retry":
            assert excinfo.value.negotiation_data == protocol_name("XX").encode()
        else:
            assert excinfo.value.kind == "reject"
            assert excinfo.value.negotiation_data
        assert listener.alive()


# --- noise cat --connect vs the independent echo listener ---------------


@pytest.mark.parametrize(
    ("pattern", "pad"),
    [("NN", 0), ("NK", 0), ("XX", 0), ("IK", 0), ("XX", PAD), ("IK", PAD)],
    ids=["NN", "NK", "XX", "IK", "XX-pad32", "IK-pad32"],
)
def test_connector_against_independent_listener(
    pattern: str, pad: int, client_key: StaticKey, tmp_path: Path
) -> None:
    name = protocol_name(pattern)
    server = make_key(tmp_path / "server.key")
    # Includes a stretch longer than 65535 bytes, which some chunk must carry.
    data = b"line one\nline two\n" + os.urandom(200_000) + b"\nthe end\n"
    with EchoListener(protocol=name, static_private=server.private, pad=pad) as listener:
        args = ["--connect", f"{HOST}:{listener.port}", "--protocol", name]
        if pattern in CLIENT_STATIC:
            args += ["--static-key", str(client_key.path)]
        if pattern != "NN":
            args += ["--remote-key", server.public.hex()]
        if pad:
            args += ["--pad", str(pad)]
        result = run_connector(args, data)
        stderr = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 0, stderr
        assert result.stdout == data, (
            f"stdout ({len(result.stdout)} bytes) != stdin ({len(data)} bytes); {stderr}"
        )
        (session,) = listener.wait_sessions(1)
    assert session.error is None, repr(session.error)
    assert session.clean_eof, "the connector did not end with a FIN at a frame boundary"
    assert session.protocol == name
    assert b"".join(session.messages) == data
    if pattern in CLIENT_STATIC:
        assert session.remote_static == client_key.public
    if pad:
        check_padding(session.received, pad)
    else:
        assert all(r.padding_len == 0 for r in session.received), "padding without --pad"


@pytest.mark.parametrize("pad", [0, PAD], ids=["nopad", "pad32"])
def test_connector_reassembles_fragmented_messages(
    pad: int, client_key: StaticKey, tmp_path: Path
) -> None:
    """The echo comes back as messages of >= 150000 bytes: several 0x01 fragments each."""
    name = protocol_name("XX")
    server = make_key(tmp_path / "server.key")
    data = os.urandom(400_000)
    with EchoListener(
        protocol=name, static_private=server.private, pad=pad, coalesce=150_000
    ) as listener:
        args = ["--connect", f"{HOST}:{listener.port}", "--protocol", name]
        args += ["--static-key", str(client_key.path), "--remote-key", server.public.hex()]
        if pad:
            args += ["--pad", str(pad)]
        result = run_connector(args, data)
        assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
        assert result.stdout == data
        (session,) = listener.wait_sessions(1)
    assert session.error is None, repr(session.error)
    assert session.clean_eof
    assert b"".join(session.messages) == data
    assert len(session.sent_fragments) >= 2
    assert all(count >= 3 for count in session.sent_fragments[:-1])


def test_connector_rejects_wrong_server_key(client_key: StaticKey, tmp_path: Path) -> None:
    """XX with --remote-key: a listener proving another static key must be refused."""
    name = protocol_name("XX")
    server = make_key(tmp_path / "server.key")
    other = make_key(tmp_path / "other.key")
    with EchoListener(protocol=name, static_private=server.private) as listener:
        args = ["--connect", f"{HOST}:{listener.port}", "--protocol", name]
        args += ["--static-key", str(client_key.path), "--remote-key", other.public.hex()]
        result = run_connector(args, b"must not be delivered\n")
        assert result.returncode != 0
        assert result.stdout == b""
        stderr_lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        assert len(stderr_lines) >= 1
        (session,) = listener.wait_sessions(1)
    assert session.messages == []


# --- garbage does not take the echo listener down -----------------------


def _frame(negotiation: bytes, message: bytes) -> bytes:
    return (
        struct.pack(">H", len(negotiation))
        + negotiation
        + struct.pack(">H", len(message))
        + message
    )


GARBAGE_THEN_FIN = [
    b"",
    b"\x00",
    b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    os.urandom(3000),
    _frame(b"hello", b"abc"),  # negotiation data that is no protocol name
    _frame(b"Noise_XX_25519_AESGCM_SHA256", b"")[:-1],  # frame cut short
    b"\xff\xff" + b"x" * 100,  # declares more than it sends
]


def test_garbage_does_not_take_the_listener_down(
    server_key: StaticKey, client_key: StaticKey
) -> None:
    name = protocol_name("XX")
    with cat_listener("--protocol", name, "--static-key", str(server_key.path)) as listener:
        address = (listener.host, listener.port)
        # A client stuck in the middle of a frame, open during everything below.
        idle = socket.create_connection(address, timeout=TIMEOUT)
        try:
            idle.sendall(b"\x00\x1cNoise_XX")
            for garbage in GARBAGE_THEN_FIN:
                with socket.create_connection(address, timeout=TIMEOUT) as sock:
                    sock.sendall(garbage)
                    sock.shutdown(socket.SHUT_WR)
                    check_explicit_reject_or_nothing(drain_until_closed(sock))
                assert listener.alive(), f"died after {garbage[:20]!r}: {listener.stderr}"

            # Silent rejects (README): a truncated first message, no FIN from us.
            with socket.create_connection(address, timeout=TIMEOUT) as sock:
                sock.sendall(_frame(name.encode(), b"short"))
                assert drain_until_closed(sock) == b"", "expected a silent reject"

            # A reset connection.
            sock = socket.create_connection(address, timeout=TIMEOUT)
            sock.sendall(_frame(name.encode(), os.urandom(32))[:10])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

            # After a good handshake: invalid flags, a bad ciphertext, a runt frame.
            violations: list[tuple[str, bytes | None]] = [
                ("flag 0x02", b"\x02payload"),
                ("no flag at all", b""),
                ("bad ciphertext", None),
            ]
            for label, body in violations:
                peer = connect(*address, protocol=name, static_private=client_key.private)
                with peer.sock:
                    exchange_and_check(peer, [b"before " + label.encode()])
                    if body is None:
                        peer.sock.sendall(struct.pack(">H", 40) + os.urandom(40))
                    else:
                        peer.send_raw_body(body)
                    try:
                        echo = peer.receive_message()
                    except (ConnectionResetError, PeerClosed):
                        echo = None
                    assert echo is None, f"{label}: connection not closed, got {echo!r}"
                assert listener.alive(), f"died after {label}: {listener.stderr}"

            peer = connect(*address, protocol=name, static_private=client_key.private)
            with peer.sock:
                exchange_and_check(peer, [b"\x01"])
                peer.sock.sendall(struct.pack(">H", 1) + b"z")  # runt: shorter than a tag
                assert drain_until_closed(peer.sock) == b"", "runt frame not rejected silently"

            # The listener still serves a good client, fully.
            peer = connect(*address, protocol=name, static_private=client_key.private)
            with peer.sock:
                exchange_and_check(peer, MESSAGES)
                peer.close_write()
                peer.expect_eof()
            assert listener.alive(), listener.stderr
        finally:
            idle.close()
