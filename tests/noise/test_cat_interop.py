"""``noisewall noise cat`` (a real subprocess) against the independent peer in nsock_peer.py.

The peer knows nothing of noisewall's own layers: bodies are the application's
bytes exactly as the 2draft spec frames them.

* ``--listen --echo``: the independent client handshakes (NN, NK, XX, IK, with
  and without ``--pad 64``), sends 24 messages (empty to one full body) and
  checks every echo byte for byte, the padding of every received payload and
  the closing.
* ``--connect``: the real CLI client pipes 1.5 MB of stdin (at least 23 bodies)
  to the independent echo listener and must print exactly its stdin.
* Negotiation both ways: switch, retry and explicit reject.
* Garbage and protocol violations on one connection must not take the echo
  listener down, and it says why it closed each one.
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
    MAX_BODY,
    EchoListener,
    NoiseSocketPeer,
    PeerClosed,
    ReceivedPayload,
    Rejected,
    SessionReport,
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
PAD = 64
#: Messages each way per session (the issue asks for at least 20).
ROUNDS = 24
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


def messages(count: int = ROUNDS) -> list[bytes]:
    """``count`` application messages: empty, tiny, binary, text, and one full body."""
    fixed = [b"", b"hello, noisewall", b"\x00\x01 binary \xff\xfe\n", b"\x00", b"\x01",
             bytes(range(256)) * 16, os.urandom(MAX_BODY)]
    return fixed + [os.urandom(1 + (i * 7919) % 5000) for i in range(count - len(fixed))]


def exchange_and_check(peer: NoiseSocketPeer, sent: list[bytes]) -> None:
    """Each message goes out as one body and comes back as one body, byte for byte."""
    for message in sent:
        peer.send_message(message)
        echo = peer.receive_message()
        assert echo is not None, "listener closed instead of echoing"
        assert echo == message


def pipelined_exchange(peer: NoiseSocketPeer, sent: list[bytes]) -> None:
    """All messages out first, then all echoes: the listener must keep them apart."""
    for message in sent:
        peer.send_message(message)
    for message in sent:
        assert peer.receive_message() == message


# --- noise cat --listen --echo vs the independent client ----------------


@pytest.mark.parametrize("pad", [0, PAD], ids=["nopad", "pad64"])
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
            listener.host, listener.port, protocol=name, pad=pad,
            static_private=client_key.private if pattern in CLIENT_STATIC else None,
            remote_static=server_key.public if pattern in KNOWS_SERVER_KEY else None,
        )
        with peer.sock:
            assert peer.handshake_hash is not None
            if pattern in ("XX", "IK", "NK"):
                assert peer.remote_static == server_key.public
            sent = messages()
            exchange_and_check(peer, sent)
            pipelined_exchange(peer, [m for m in sent if len(m) < 10_000])
            transport = [r for r in peer.received if r.stage == "transport"]
            assert len(transport) >= ROUNDS
            if pad:
                check_padding(peer.received, pad)
            else:
                assert all(r.padding_len == 0 for r in peer.received), "padding without --pad"
            # End of session: our FIN at a frame boundary; the listener closes its side.
            peer.close_write()
            peer.expect_eof()
            local = peer.sock.getsockname()
        assert listener.alive(), f"echo listener exited: {listener.stderr}"
        wait_for_line(listener, f"connection from {HOST}:{local[1]} closed: "
                      "the peer closed the connection")


def wait_for_line(listener: Listener, line: str) -> None:
    """The listener's stderr gets exactly ``line`` (within the timeout)."""
    deadline = time.monotonic() + TIMEOUT
    while line not in listener.stderr:
        if time.monotonic() > deadline:
            pytest.fail(f"no stderr line {line!r}: {listener.stderr}")
        time.sleep(0.02)


def closing_line(listener: Listener, port: int) -> str:
    """The one stderr line about the connection from local ``port``."""
    prefix = f"connection from {HOST}:{port} closed: "
    deadline = time.monotonic() + TIMEOUT
    while True:
        lines = [line for line in listener.stderr if line.startswith(prefix)]
        if lines:
            time.sleep(0.1)  # a second line would show up by now
            lines = [line for line in listener.stderr if line.startswith(prefix)]
            assert len(lines) == 1, lines
            return lines[0][len(prefix):]
        if time.monotonic() > deadline:
            pytest.fail(f"no closing line for port {port}: {listener.stderr}")
        time.sleep(0.02)


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


# --- negotiation: the independent client against the listener ------------


def test_listener_rejects_a_protocol_it_does_not_run(server_key: StaticKey) -> None:
    """The listener runs XX and has no --retry-with: an NN offer gets an explicit reject."""
    args = ["--protocol", protocol_name("XX"), "--static-key", str(server_key.path)]
    with cat_listener(*args) as listener:
        with pytest.raises(Rejected) as excinfo:
            peer = connect(listener.host, listener.port, protocol=protocol_name("NN"))
            peer.sock.close()
        assert excinfo.value.kind == "reject"
        assert excinfo.value.negotiation_data == b"protocol not supported: " + protocol_name(
            "NN").encode()
        assert listener.alive()


def test_listener_asks_for_a_retry(server_key: StaticKey, client_key: StaticKey) -> None:
    """NN offered, --retry-with XX: the client retries with XX (prologue NoiseSocketInit3)."""
    xx = protocol_name("XX")
    args = ["--protocol", xx, "--static-key", str(server_key.path), "--retry-with", xx]
    with cat_listener(*args) as listener:
        peer = connect(listener.host, listener.port, protocol=protocol_name("NN"),
                       static_private=client_key.private, accept=[xx])
        with peer.sock:
            assert (peer.negotiation, peer.protocol) == ("retry", xx)
            assert peer.remote_static == server_key.public
            exchange_and_check(peer, messages())
            peer.close_write()
            peer.expect_eof()
        assert listener.alive()


def test_listener_switches_when_it_cannot_read_ik(
    server_key: StaticKey, client_key: StaticKey
) -> None:
    """IK to a stale key; the listener switches to XX, writing its first message itself."""
    ik, xx = protocol_name("IK"), protocol_name("XX")
    stale = X25519PrivateKey.generate().public_key().public_bytes_raw()
    args = ["--protocol", ik, "--static-key", str(server_key.path), "--fallback", xx]
    with cat_listener(*args) as listener:
        peer = connect(listener.host, listener.port, protocol=ik, remote_static=stale,
                       static_private=client_key.private, accept=[xx])
        with peer.sock:
            assert (peer.negotiation, peer.protocol) == ("switch", xx)
            assert peer.remote_static == server_key.public
            exchange_and_check(peer, messages())
        # With the right key the same listener accepts IK as it is.
        peer = connect(listener.host, listener.port, protocol=ik, remote_static=server_key.public,
                       static_private=client_key.private, accept=[xx])
        with peer.sock:
            assert (peer.negotiation, peer.protocol) == ("accept", ik)
            exchange_and_check(peer, [b"0-RTT key was right"])
        assert listener.alive()


# --- noise cat --connect vs the independent echo listener ---------------


def connector_args(pattern: str, port: int, server: StaticKey, client: StaticKey,
                   pad: int = 0) -> list[str]:
    args = ["--connect", f"{HOST}:{port}", "--protocol", protocol_name(pattern)]
    if pattern in CLIENT_STATIC:
        args += ["--static-key", str(client.path)]
    if pattern != "NN":
        args += ["--remote-key", server.public.hex()]
    if pad:
        args += ["--pad", str(pad)]
    return args


#: 1.5 MB of stdin: at least 23 bodies of at most 65517 bytes, echoed back one for one.
BULK = b"line one\nline two\n" + os.urandom(1_500_000) + b"\nthe end\n"


def check_connector_session(
    listener: EchoListener, result: subprocess.CompletedProcess[bytes], data: bytes
) -> SessionReport:
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, stderr
    assert result.stdout == data, (
        f"stdout ({len(result.stdout)} bytes) != stdin ({len(data)} bytes); {stderr}"
    )
    (session,) = listener.wait_sessions(1)
    assert session.error is None, repr(session.error)
    assert session.clean_eof, "the connector did not end with a FIN at a frame boundary"
    assert b"".join(session.messages) == data
    assert len(session.messages) >= ROUNDS - 1 >= 20  # bodies each way (echoed one for one)
    assert all(len(message) <= MAX_BODY for message in session.messages)
    return session


@pytest.mark.parametrize("pad", [0, PAD], ids=["nopad", "pad64"])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_connector_against_independent_listener(
    pattern: str, pad: int, client_key: StaticKey, tmp_path: Path
) -> None:
    name = protocol_name(pattern)
    server = make_key(tmp_path / "server.key")
    with EchoListener(protocol=name, static_private=server.private, pad=pad) as listener:
        result = run_connector(connector_args(pattern, listener.port, server, client_key, pad),
                               BULK)
        session = check_connector_session(listener, result, BULK)
    assert session.protocol == name
    if pattern in CLIENT_STATIC:
        assert session.remote_static == client_key.public
    if pad:
        check_padding(session.received, pad)
    else:
        assert all(r.padding_len == 0 for r in session.received), "padding without --pad"


@pytest.mark.parametrize("kind", ["switch", "retry"])
def test_connector_follows_a_switch_or_retry(
    kind: str, client_key: StaticKey, tmp_path: Path
) -> None:
    """The independent listener answers NN with XX (switch: it writes XX's first message)."""
    xx = protocol_name("XX")
    server = make_key(tmp_path / "server.key")
    with EchoListener(protocol=xx, static_private=server.private,
                      respond=(kind, xx)) as listener:
        args = ["--connect", f"{HOST}:{listener.port}", "--protocol", protocol_name("NN"),
                "--accept", xx, "--static-key", str(client_key.path)]
        session = check_connector_session(listener, run_connector(args, BULK), BULK)
    assert (session.negotiation, session.protocol) == (kind, xx)
    assert session.remote_static == client_key.public


def test_connector_reports_an_explicit_reject(client_key: StaticKey, tmp_path: Path) -> None:
    server = make_key(tmp_path / "server.key")
    with EchoListener(protocol=protocol_name("XX"), static_private=server.private,
                      respond=("reject", "no NN here")) as listener:
        args = connector_args("NN", listener.port, server, client_key)
        result = run_connector(args, b"must not be delivered\n")
        (session,) = listener.wait_sessions(1)
    assert result.returncode != 0
    assert result.stdout == b""
    assert "no NN here" in result.stderr.decode("utf-8", "replace")
    assert session.messages == []


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
                    port = sock.getsockname()[1]
                assert listener.alive(), f"died after {garbage[:20]!r}: {listener.stderr}"
                assert closing_line(listener, port).startswith("handshake failed: ")

            # Silent rejects (README): a truncated first message, no FIN from us.
            with socket.create_connection(address, timeout=TIMEOUT) as sock:
                sock.sendall(_frame(name.encode(), b"short"))
                assert drain_until_closed(sock) == b"", "expected a silent reject"

            # A reset connection.
            sock = socket.create_connection(address, timeout=TIMEOUT)
            sock.sendall(_frame(name.encode(), os.urandom(32))[:10])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

            # After a good handshake: a body_len beyond the payload, a bad ciphertext.
            violations: list[tuple[str, bytes | None, str]] = [
                ("body_len too long", b"\xff\xf0 and far less", "malformed body: "),
                ("body_len field cut", b"\x00", "malformed body: "),
                ("bad ciphertext", None, "decrypt failed: "),
            ]
            for label, plaintext, reason in violations:
                peer = connect(*address, protocol=name, static_private=client_key.private)
                with peer.sock:
                    exchange_and_check(peer, [b"before " + label.encode()])
                    if plaintext is None:
                        peer.sock.sendall(struct.pack(">H", 40) + os.urandom(40))
                    else:
                        peer.send_raw_plaintext(plaintext)
                    try:
                        echo = peer.receive_message()
                    except (ConnectionResetError, PeerClosed):
                        echo = None
                    assert echo is None, f"{label}: connection not closed, got {echo!r}"
                    port = peer.sock.getsockname()[1]
                assert listener.alive(), f"died after {label}: {listener.stderr}"
                assert closing_line(listener, port).startswith(reason), label

            peer = connect(*address, protocol=name, static_private=client_key.private)
            with peer.sock:
                exchange_and_check(peer, [b"\x01"])
                peer.sock.sendall(struct.pack(">H", 1) + b"z")  # runt: shorter than a tag
                assert drain_until_closed(peer.sock) == b"", "runt frame not rejected silently"
                port = peer.sock.getsockname()[1]
            assert closing_line(listener, port).startswith("decrypt failed: ")

            # The listener still serves a good client, fully.
            peer = connect(*address, protocol=name, static_private=client_key.private)
            with peer.sock:
                exchange_and_check(peer, messages())
                peer.close_write()
                peer.expect_eof()
            assert listener.alive(), listener.stderr
        finally:
            idle.close()
