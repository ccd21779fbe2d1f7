"""An independent NoiseSocket peer, for interop tests against ``noisewall noise cat``.

Written from the NoiseSocket spec (revision 2draft, ``shared/specs/noisesocket.md``)
and the "Wire protocol (for other implementations)" section of the README only,
on top of the third-party ``noiseprotocol`` package and plain ``socket``. It
deliberately imports nothing from ``noisewall``.

What it implements:

* NoiseSocket framing: handshake frame = ``u16 negotiation_data_len |
  negotiation_data | u16 noise_message_len | noise_message``; transport frame =
  ``u16 noise_message_len | noise_message`` (big-endian).
* The initial prologue: ``"NoiseSocketInit1" | u16 len | negotiation_data``
  followed by the application prologue.
* Negotiation data as the README documents it (UTF-8 protocol names): Alice
  sends the initial protocol name; Bob accepts (empty), switches (a protocol
  name and the new protocol's first message, written by Bob as its Noise
  initiator; prologue ``NoiseSocketInit2``), requests a retry (a protocol name
  and an empty message; Alice's retry prologue is ``NoiseSocketInit3``) or
  rejects (a reason not starting with ``Noise_``, an empty message).
* Payloads: an encrypted payload's plaintext is ``u16 body_len | body |
  padding`` (zero padding; ``pad`` N makes ``body + padding`` the smallest
  multiple of N that holds the body, at least N, capped at 65517); a cleartext
  handshake payload is the bare body.
* Transport bodies are the application's bytes exactly (one message per body);
  nothing of noisewall's own layers is known here.
* End of session: TCP half-close at a frame boundary.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType

from noise.connection import Keypair, NoiseConnection

INIT1 = b"NoiseSocketInit1"
INIT2 = b"NoiseSocketInit2"
INIT3 = b"NoiseSocketInit3"
MAX_NOISE_MESSAGE = 65535
TAGLEN = 16
#: ``body + padding`` of one encrypted payload: 65535 - tag - body_len field.
MAX_BODY_AND_PADDING = MAX_NOISE_MESSAGE - TAGLEN - 2
#: The largest application message one transport body carries.
MAX_BODY = MAX_BODY_AND_PADDING
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Pattern:
    """A Noise handshake pattern (Noise spec section 7.4)."""

    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]

    def payload_encrypted(self) -> list[bool]:
        """Whether each message's payload goes through the AEAD (k is set by then).

        Without PSKs, ``k`` is set by the first DH token (ee/es/se/ss).
        """
        has_key = False
        result: list[bool] = []
        for message in self.messages:
            for token in message:
                if token in ("ee", "es", "se", "ss", "psk"):
                    has_key = True
            result.append(has_key)
        return result


PATTERNS: dict[str, Pattern] = {
    "NN": Pattern((), (), (("e",), ("e", "ee"))),
    "NK": Pattern((), ("s",), (("e", "es"), ("e", "ee"))),
    "XX": Pattern((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IK": Pattern((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


def pattern_of(protocol: str) -> Pattern:
    parts = protocol.split("_")
    if len(parts) != 5 or parts[0] != "Noise" or parts[1] not in PATTERNS:
        raise ValueError(f"unsupported protocol for this peer: {protocol!r}")
    return PATTERNS[parts[1]]


def padded_len(body_len: int, pad: int) -> int:
    """``len(body + padding)`` per the README's ``--pad N`` rule."""
    if body_len > MAX_BODY_AND_PADDING:
        raise ValueError(f"body of {body_len} bytes does not fit one payload")
    if pad <= 0:
        return body_len
    multiple = max(pad, -(-body_len // pad) * pad)
    return min(multiple, MAX_BODY_AND_PADDING)


def encode_payload(body: bytes, encrypted: bool, pad: int) -> bytes:
    """The Noise payload plaintext for one NoiseSocket message."""
    if not encrypted:
        return body  # cleartext handshake payload: the bare body, no body_len
    total = padded_len(len(body), pad)
    return struct.pack(">H", len(body)) + body + bytes(total - len(body))


def u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} does not fit a u16 length")
    return struct.pack(">H", value)


def initial_prologue(negotiation_data: bytes, application_prologue: bytes) -> bytes:
    return INIT1 + u16(len(negotiation_data)) + negotiation_data + application_prologue


def frame_handshake(negotiation_data: bytes, noise_message: bytes) -> bytes:
    return u16(len(negotiation_data)) + negotiation_data + u16(len(noise_message)) + noise_message


class PeerError(Exception):
    """The other side broke the protocol (or closed at a bad moment)."""


class PeerClosed(PeerError):
    """EOF where a frame was expected."""


class Rejected(PeerError):
    """Bob answered with non-empty negotiation data (reject, retry or switch)."""

    def __init__(self, kind: str, negotiation_data: bytes) -> None:
        super().__init__(f"{kind}: {negotiation_data!r}")
        self.kind = kind
        self.negotiation_data = negotiation_data


@dataclass(frozen=True)
class ReceivedPayload:
    """One decrypted payload as it came off the wire (for padding checks)."""

    stage: str  # "handshake" or "transport"
    encrypted: bool
    noise_message_len: int
    body_len: int
    padding_len: int
    padding_is_zero: bool


def recv_exact(sock: socket.socket, count: int, *, eof_ok: bool = False) -> bytes | None:
    """Read exactly ``count`` bytes; ``None`` on EOF before the first byte if ``eof_ok``.

    The socket's timeout bounds every ``recv``; the loop ends after at most
    ``count`` successful reads.
    """
    chunks: list[bytes] = []
    received = 0
    while received < count:
        chunk = sock.recv(count - received)
        if not chunk:
            if received == 0 and eof_ok:
                return None
            raise PeerClosed(f"EOF after {received} of {count} bytes")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket, count: int) -> bytes:
    data = recv_exact(sock, count)
    assert data is not None
    return data


class NoiseSocketPeer:
    """One NoiseSocket session over a connected socket, either role.

    As initiator (Alice) it offers ``protocol`` and follows a switch or retry
    to a protocol in ``accept`` (anything else raises :class:`Rejected`). As
    responder (Bob) it accepts an initial protocol in ``accept`` (default:
    just ``protocol``), or, with ``respond`` set, answers every initial
    message with that choice: ``("switch", name)``, ``("retry", name)`` or
    ``("reject", reason)``. ``static_private``: our raw X25519 private key;
    ``remote_static``: the peer's public key where the pattern needs it in
    advance. After :meth:`handshake`, ``protocol`` is the one that ran.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        protocol: str,
        initiator: bool,
        static_private: bytes | None = None,
        remote_static: bytes | None = None,
        prologue: bytes = b"",
        pad: int = 0,
        accept: Collection[str] | None = None,
        respond: tuple[str, str] | None = None,
        handshake_bodies: Collection[bytes] = (),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self.initiator = initiator
        self.static_private = static_private
        self.remote_static = remote_static
        self.application_prologue = prologue
        self.pad = pad
        self.accept = set(accept) if accept is not None else {protocol}
        self.respond = respond
        self.handshake_bodies = list(handshake_bodies)
        self.received: list[ReceivedPayload] = []
        self.received_handshake_bodies: list[bytes] = []
        self.handshake_hash: bytes | None = None
        self.negotiation: str = "accept"  # what happened: accept, switch or retry
        self._conn: NoiseConnection | None = None
        sock.settimeout(timeout)

    # --- handshake -----------------------------------------------------

    def _new_connection(
        self, protocol: str, prologue: bytes, noise_initiator: bool
    ) -> NoiseConnection:
        pattern = pattern_of(protocol)
        conn = NoiseConnection.from_name(protocol.encode("ascii"))
        if noise_initiator:
            conn.set_as_initiator()
        else:
            conn.set_as_responder()
        conn.set_prologue(prologue + self.application_prologue)
        local_static_needed = any(
            "s" in message for message in pattern.messages[(0 if noise_initiator else 1) :: 2]
        ) or ("s" in (pattern.initiator_pre if noise_initiator else pattern.responder_pre))
        if local_static_needed:
            if self.static_private is None:
                raise ValueError(f"{protocol} needs our static private key")
            conn.set_keypair_from_private_bytes(Keypair.STATIC, self.static_private)
        remote_pre = pattern.responder_pre if noise_initiator else pattern.initiator_pre
        if "s" in remote_pre:
            if self.remote_static is None:
                raise ValueError(f"{protocol} needs the peer's static public key")
            conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, self.remote_static)
        conn.start_handshake()
        return conn

    def _body_for(self, written: int) -> bytes:
        # Our handshake bodies, in the order we write messages; empty by default.
        if written < len(self.handshake_bodies):
            return self.handshake_bodies[written]
        return b""

    def _send_handshake_frame(self, negotiation_data: bytes, noise_message: bytes) -> bytes:
        frame = frame_handshake(negotiation_data, noise_message)
        self.sock.sendall(frame)
        return frame

    def _read_handshake_frame(self) -> tuple[bytes, bytes]:
        negotiation_data = _recv(self.sock, struct.unpack(">H", _recv(self.sock, 2))[0])
        noise_message = _recv(self.sock, struct.unpack(">H", _recv(self.sock, 2))[0])
        return negotiation_data, noise_message

    def _record(self, stage: str, encrypted: bool, message_len: int, plaintext: bytes) -> bytes:
        """Split a payload plaintext into body and padding; record what came in."""
        if not encrypted:
            self.received.append(
                ReceivedPayload(stage, False, message_len, len(plaintext), 0, True)
            )
            return plaintext
        if len(plaintext) < 2:
            raise PeerError(f"encrypted {stage} payload of {len(plaintext)} bytes: no body_len")
        body_len = struct.unpack(">H", plaintext[:2])[0]
        if body_len > len(plaintext) - 2:
            raise PeerError(f"body_len {body_len} exceeds the {len(plaintext) - 2}-byte payload")
        body = plaintext[2 : 2 + body_len]
        padding = plaintext[2 + body_len :]
        self.received.append(
            ReceivedPayload(stage, True, message_len, body_len, len(padding), not any(padding))
        )
        return body

    def _write(self, conn: NoiseConnection, index: int, negotiation_data: bytes) -> None:
        encrypted = pattern_of(self.protocol).payload_encrypted()[index]
        payload = encode_payload(self._body_for(self._written), encrypted, self.pad)
        self._written += 1
        message = bytes(conn.write_message(payload))
        if len(message) > MAX_NOISE_MESSAGE:
            raise ValueError("handshake message too long")
        self._send_handshake_frame(negotiation_data, message)

    def _read(self, conn: NoiseConnection, index: int, message: bytes) -> None:
        encrypted = pattern_of(self.protocol).payload_encrypted()[index]
        # Keep the HandshakeState: noiseprotocol drops it once the handshake ends.
        state = conn.noise_protocol.handshake_state
        plaintext = bytes(conn.read_message(message))
        self.received_handshake_bodies.append(
            self._record("handshake", encrypted, len(message), plaintext)
        )
        learned = getattr(state.rs, "public_bytes", None)
        if learned is not None:
            if self.remote_static is not None and learned != self.remote_static:
                raise PeerError("the peer proved a different static key")
            self.remote_static = bytes(learned)

    def _finish(
        self, conn: NoiseConnection, noise_initiator: bool, start: int, first: bytes | None
    ) -> None:
        """Run the pattern's messages from ``start``; ``first`` is one already read."""
        for index in range(start, len(pattern_of(self.protocol).messages)):
            if (index % 2 == 0) == noise_initiator:
                self._write(conn, index, b"")
                continue
            if first is None:
                negotiation_data, message = self._read_handshake_frame()
                if negotiation_data:
                    raise PeerError(f"negotiation data in message {index}: {negotiation_data!r}")
            else:
                message, first = first, None
            self._read(conn, index, message)
        if not conn.handshake_finished:
            raise PeerError("handshake did not finish")
        self._conn = conn
        self.handshake_hash = bytes(conn.get_handshake_hash())

    def handshake(self) -> None:
        """Run the whole NoiseSocket handshake, negotiation included; raise on any deviation."""
        self._written = 0
        if self.initiator:
            self._alice()
        else:
            self._bob()

    def _alice(self) -> None:
        offered = self.protocol.encode("utf-8")
        conn = self._new_connection(self.protocol, initial_prologue(offered, b""), True)
        encrypted = pattern_of(self.protocol).payload_encrypted()[0]
        payload = encode_payload(self._body_for(0), encrypted, self.pad)
        self._written = 1
        transcript = self._send_handshake_frame(offered, bytes(conn.write_message(payload)))
        negotiation_data, message = self._read_handshake_frame()
        if not negotiation_data:  # accepted
            self._read(conn, 1, message)
            self._finish(conn, True, 2, None)
            return
        kind = "reject"
        if negotiation_data.startswith(b"Noise_"):
            kind = "switch" if message else "retry"
        name = negotiation_data.decode("utf-8", "replace")
        if kind == "reject" or name not in self.accept:
            raise Rejected(kind, negotiation_data)
        self.protocol = name
        self.negotiation = kind
        if "s" not in pattern_of(name).responder_pre:
            self.remote_static = None  # learned anew from the protocol that runs now
        chosen = u16(len(negotiation_data)) + negotiation_data
        if kind == "switch":  # Bob wrote the new protocol's first message as its initiator
            conn = self._new_connection(name, INIT2 + transcript + chosen, False)
            self._finish(conn, False, 0, message)
            return
        transcript += frame_handshake(negotiation_data, b"")
        conn = self._new_connection(name, INIT3 + transcript + chosen, True)
        self._written = 0
        self._write(conn, 0, negotiation_data)
        self._finish(conn, True, 1, None)

    def _bob(self) -> None:
        negotiation_data, first = self._read_handshake_frame()
        transcript = frame_handshake(negotiation_data, first)
        if self.respond is not None:
            kind, name = self.respond
            choice = name.encode("utf-8")
            if kind == "reject":
                self._send_handshake_frame(choice, b"")
                raise Rejected("reject", choice)
            self.protocol = name
            self.negotiation = kind
            chosen = u16(len(choice)) + choice
            if kind == "switch":
                conn = self._new_connection(name, INIT2 + transcript + chosen, True)
                self._write(conn, 0, choice)
                self._finish(conn, True, 1, None)
                return
            transcript += self._send_handshake_frame(choice, b"")
            retried, first = self._read_handshake_frame()
            if retried and retried != choice:
                raise PeerError(f"retried with {retried!r}, not {choice!r}")
            prologue = INIT3 + transcript + u16(len(retried)) + retried
            conn = self._new_connection(name, prologue, False)
            self._finish(conn, False, 0, first)
            return
        try:
            offered = negotiation_data.decode("utf-8")
        except UnicodeDecodeError:
            offered = ""
        if offered not in self.accept:
            # Explicit reject: a reason not starting with "Noise_", no message.
            self._send_handshake_frame(b"unsupported protocol", b"")
            raise PeerError(f"refused initial protocol {negotiation_data!r}")
        self.protocol = offered
        conn = self._new_connection(offered, initial_prologue(negotiation_data, b""), False)
        self._finish(conn, False, 0, first)

    # --- transport -----------------------------------------------------

    def _send_body(self, body: bytes) -> None:
        assert self._conn is not None
        plaintext = encode_payload(body, True, self.pad)
        assert len(plaintext) + TAGLEN <= MAX_NOISE_MESSAGE  # noiseprotocol would not check
        ciphertext = self._conn.encrypt(plaintext)
        self.sock.sendall(u16(len(ciphertext)) + ciphertext)

    def send_raw_plaintext(self, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` as a transport payload as is (e.g. with a lying body_len)."""
        assert self._conn is not None
        ciphertext = self._conn.encrypt(plaintext)
        self.sock.sendall(u16(len(ciphertext)) + ciphertext)

    def send_message(self, data: bytes) -> None:
        """Send one application message as one transport body, nothing added."""
        if len(data) > MAX_BODY:
            raise ValueError(f"a message of {len(data)} bytes does not fit one body")
        self._send_body(data)

    def receive_message(self) -> bytes | None:
        """The next application message (one transport body); ``None`` on EOF at a boundary."""
        assert self._conn is not None
        header = recv_exact(self.sock, 2, eof_ok=True)
        if header is None:
            return None
        length = struct.unpack(">H", header)[0]
        if length < TAGLEN:
            raise PeerError(f"transport message of {length} bytes is shorter than a tag")
        ciphertext = _recv(self.sock, length)
        return self._record("transport", True, length, self._conn.decrypt(ciphertext))

    def close_write(self) -> None:
        """End of session: half-close at a frame boundary."""
        self.sock.shutdown(socket.SHUT_WR)

    def expect_eof(self) -> None:
        """Wait (within the socket timeout) for the peer to close its side."""
        data = self.sock.recv(1)
        if data:
            raise PeerError(f"expected EOF, got {data!r}")


def connect(
    host: str,
    port: int,
    *,
    protocol: str,
    static_private: bytes | None = None,
    remote_static: bytes | None = None,
    prologue: bytes = b"",
    pad: int = 0,
    handshake_bodies: Collection[bytes] = (),
    accept: Collection[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> NoiseSocketPeer:
    """Connect as Alice and complete the handshake (following a switch or retry to ``accept``)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        peer = NoiseSocketPeer(
            sock,
            protocol=protocol,
            initiator=True,
            static_private=static_private,
            remote_static=remote_static,
            prologue=prologue,
            pad=pad,
            handshake_bodies=handshake_bodies,
            accept=[protocol, *accept],
            timeout=timeout,
        )
        peer.handshake()
    except BaseException:
        sock.close()
        raise
    return peer


@dataclass
class SessionReport:
    """What the echo listener saw on one connection."""

    protocol: str = ""
    remote_static: bytes | None = None
    handshake_bodies: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    negotiation: str = ""
    received: list[ReceivedPayload] = field(default_factory=list)
    clean_eof: bool = False
    error: BaseException | None = None


class EchoListener:
    """A NoiseSocket echo server (Bob) on 127.0.0.1, in a background thread.

    It accepts the initial protocol(s) in ``accept`` (or answers as
    ``respond`` says: switch, retry or reject), echoes every application
    message back as one message, and closes its side after the client's FIN.
    Connections are served one after another; use as a context manager.
    """

    def __init__(
        self,
        *,
        protocol: str,
        static_private: bytes | None = None,
        accept: Collection[str] | None = None,
        prologue: bytes = b"",
        pad: int = 0,
        respond: tuple[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = 8,
        max_lifetime: float = 60.0,
    ) -> None:
        self.protocol = protocol
        self.static_private = static_private
        self.accept = set(accept) if accept is not None else {protocol}
        self.prologue = prologue
        self.pad = pad
        self.respond = respond
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_lifetime = max_lifetime
        self.sessions: list[SessionReport] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="nsock-echo", daemon=True)
        self.done = threading.Event()

    def __enter__(self) -> EchoListener:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        self._server.close()

    def wait_sessions(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[SessionReport]:
        """Wait until ``count`` sessions have ended (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sessions) >= count:  # a report is added when its session ends
                return list(self.sessions)
            time.sleep(0.02)
        raise TimeoutError(f"only {len(self.sessions)} session(s) seen in {timeout} s")

    def _serve(self) -> None:
        deadline = time.monotonic() + self.max_lifetime
        served = 0
        while not self._stop.is_set() and served < self.max_connections:
            if time.monotonic() > deadline:
                break
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            served += 1
            with conn:
                self._session(conn)
        self.done.set()

    def _session(self, conn: socket.socket) -> None:
        report = SessionReport()
        peer = NoiseSocketPeer(
            conn,
            protocol=self.protocol,
            initiator=False,
            static_private=self.static_private,
            prologue=self.prologue,
            pad=self.pad,
            accept=self.accept,
            respond=self.respond,
            timeout=self.timeout,
        )
        try:
            peer.handshake()
            report.protocol = peer.protocol
            report.remote_static = peer.remote_static
            report.handshake_bodies = peer.received_handshake_bodies
            report.negotiation = peer.negotiation
            for _ in range(100_000):
                message = peer.receive_message()
                if message is None:
                    report.clean_eof = True
                    break
                report.messages.append(message)
                peer.send_message(message)
        except Exception as exc:  # reported to the test, which asserts on it
            report.error = exc
        finally:
            report.received = peer.received
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            self.sessions.append(report)
