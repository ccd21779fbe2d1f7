"""Many TCP streams over one tunnel session: the frame codec and the stream state (sans-IO).

The mux runs inside an authenticated Noise session, so it only has to be
correct, not secret. Every frame is ``type (u8) | stream id (u32) | length
(u16) | payload``; frames may be split or joined freely across Noise
messages (the parser works on a byte stream).

=========  ====================================================================
OPEN       client -> server: connect stream ``id`` to ``port (u16) | host``
OPENED     server -> client: the onward connection is up
REFUSED    server -> client: ``reply (u8)``, a SOCKS5 (RFC 1928) reply code
DATA       payload bytes, at most the credit the receiver granted
EOF        the sender writes nothing more on this stream (half-close)
RESET      abort the stream at once, both directions
CREDIT     ``increment (u32)``: the receiver consumed that many bytes
PING/PONG  stream 0, ``opaque (u64)``: liveness and round-trip time
=========  ====================================================================

Flow control is per stream and credit based: each side may have at most
``window`` unconsumed bytes in flight towards the other, so one slow
destination fills its own window and never stalls the other streams (or
makes the receiver buffer without bound). Clients use odd stream ids; the
server never opens streams. Any violation raises :class:`MuxError`: the
session is then dead and the caller closes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER = struct.Struct(">BIH")
MAX_PAYLOAD = 0xFFFF
#: DATA frames are cut to this size so that one frame fills one Noise message
#: (65517-byte NoiseSocket body) exactly, with no tiny second message.
MAX_DATA = 65517 - HEADER.size
#: Bytes each side may have unconsumed per stream before it must wait for credit.
DEFAULT_WINDOW = 1 << 20
#: Streams one session may hold open at once.
DEFAULT_MAX_STREAMS = 1024
_MAX_ID = 0xFFFFFFFF


class FrameType(IntEnum):
    """The mux frame types."""

    OPEN = 1
    OPENED = 2
    REFUSED = 3
    DATA = 4
    EOF = 5
    RESET = 6
    CREDIT = 7
    PING = 8
    PONG = 9


class MuxError(Exception):
    """The peer broke the mux protocol; the whole session must be closed."""


#: A frame's payload: DATA parsed from ``bytes`` is a view into them (no copy).
Payload = bytes | memoryview


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    kind: FrameType
    stream: int
    payload: Payload = b""


def encode_frame(kind: FrameType, stream: int, payload: bytes = b"") -> bytes:
    """One frame on the wire."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(kind, stream, len(payload)) + payload


class FrameParser:
    """Split a byte stream into frames; raises :class:`MuxError` on an unknown type."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray) -> list[Frame]:
        """Add bytes; return every frame now complete.

        DATA payloads may be views into ``data``: the caller hands it over and
        must not change it afterwards (a fresh read buffer, not a reused one).
        """
        # Frames are parsed straight from ``data``; only a frame cut by the end
        # of a read is buffered (and completed first next time), so each
        # payload is copied once.
        frames: list[Frame] = []
        view = memoryview(data)
        buffer = self._buffer
        while buffer and view:
            take = _wanted(buffer) - len(buffer)
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == _wanted(buffer):
                with memoryview(buffer) as whole:
                    frames += _parse(whole, copy=True)[0]
                buffer.clear()
        parsed, used = _parse(view, copy=False)
        buffer += view[used:]
        return frames + parsed


def _wanted(buffer: bytearray) -> int:
    """Bytes of the frame that starts ``buffer`` as far as known (its header, then all)."""
    if len(buffer) < HEADER.size:
        return HEADER.size
    return HEADER.size + int(HEADER.unpack_from(buffer)[2])


def _parse(view: memoryview, copy: bool) -> tuple[list[Frame], int]:
    """The complete frames at the start of ``view``, and how many bytes they took.

    DATA payloads stay views into ``view`` unless ``copy`` is set (the
    parser's own buffer, which it reuses): handed-over bulk data is not copied.
    """
    frames: list[Frame] = []
    offset = 0
    size = len(view)
    while size - offset >= HEADER.size:
        kind, stream, length = HEADER.unpack_from(view, offset)
        end = offset + HEADER.size + length
        if size < end:
            break
        try:
            frame_type = FrameType(kind)
        except ValueError:
            raise MuxError(f"unknown frame type {kind}") from None
        payload: Payload = view[offset + HEADER.size : end]
        if copy or frame_type is not FrameType.DATA:
            payload = bytes(payload)
        frames.append(Frame(frame_type, stream, payload))
        offset = end
    return frames, offset


# --- events -----------------------------------------------------------------


@dataclass(frozen=True)
class OpenRequested:
    """(server) The client asks to connect stream ``stream`` to ``host:port``."""

    stream: int
    host: str
    port: int


@dataclass(frozen=True)
class Opened:
    """(client) The server connected the stream onward."""

    stream: int


@dataclass(frozen=True)
class Refused:
    """(client) The server refused the stream; ``reply`` is a SOCKS5 reply code."""

    stream: int
    reply: int


@dataclass(frozen=True)
class DataReceived:
    """Bytes for a stream; report them with :meth:`MuxConnection.consumed` once written on."""

    stream: int
    data: Payload


@dataclass(frozen=True)
class EndReceived:
    """The peer half-closed the stream."""

    stream: int


@dataclass(frozen=True)
class ResetReceived:
    """The peer aborted the stream."""

    stream: int


@dataclass(frozen=True)
class CreditReceived:
    """The stream may send more now (wake a writer waiting for credit)."""

    stream: int


@dataclass(frozen=True)
class PongReceived:
    """The answer to :meth:`MuxConnection.ping` with the same ``opaque`` value."""

    opaque: int


MuxEvent = (
    OpenRequested | Opened | Refused | DataReceived | EndReceived | ResetReceived
    | CreditReceived | PongReceived
)


@dataclass
class _Stream:
    send_credit: int
    receive_left: int  # bytes the peer may still send before our next CREDIT
    unacknowledged: int = 0  # consumed bytes not yet granted back
    local_eof: bool = False
    remote_eof: bool = False
    established: bool = False


class MuxConnection:
    """One end of the mux (sans-IO): feed it bytes, take the bytes it wants sent."""

    def __init__(
        self,
        client: bool,
        window: int = DEFAULT_WINDOW,
        max_streams: int = DEFAULT_MAX_STREAMS,
    ) -> None:
        if not 0 < window <= _MAX_ID:
            raise ValueError("window must be between 1 and 2^32-1")
        self.client = client
        self.window = window
        self.max_streams = max_streams
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._highest_remote = 0
        self._parser = FrameParser()
        self._outbox = bytearray()

    # --- local actions -------------------------------------------------

    @property
    def stream_count(self) -> int:
        """Streams currently open."""
        return len(self._streams)

    def data_to_send(self) -> bytearray:
        """Take the bytes waiting to go to the peer."""
        # Hand the buffer itself over (no copy of the bulk data) and start a new one.
        data, self._outbox = self._outbox, bytearray()
        return data

    def open_stream(self, host: str, port: int) -> int:
        """(client) Ask the server for a stream to ``host:port``; returns its id."""
        if not self.client:
            raise MuxError("only the client opens streams")
        if len(self._streams) >= self.max_streams:
            raise MuxError(f"too many open streams (limit {self.max_streams})")
        name = host.encode("idna")
        if not 0 < len(name) < 256 or not 0 < port < 65536:
            raise ValueError(f"bad destination {host!r}:{port}")
        if self._next_id > _MAX_ID:
            raise MuxError("stream ids exhausted; open a new session")
        stream = self._next_id
        self._next_id += 2
        self._streams[stream] = _Stream(self.window, self.window)
        self._emit(FrameType.OPEN, stream, port.to_bytes(2, "big") + name)
        return stream

    def accept(self, stream: int) -> None:
        """(server) Report the onward connection as up."""
        self._require(stream).established = True
        self._emit(FrameType.OPENED, stream)

    def refuse(self, stream: int, reply: int) -> None:
        """(server) Refuse the stream with a SOCKS5 reply code."""
        self._streams.pop(stream, None)
        self._emit(FrameType.REFUSED, stream, bytes((reply,)))

    def send_credit(self, stream: int) -> int:
        """How many bytes :meth:`send_data` would take now (0 for unknown streams)."""
        state = self._streams.get(stream)
        if state is None or state.local_eof:
            return 0
        return state.send_credit

    def send_data(self, stream: int, data: bytes | memoryview) -> int:
        """Frame as much of ``data`` as the credit allows; returns how many bytes were taken."""
        state = self._require(stream)
        if state.local_eof:
            raise MuxError(f"stream {stream} was already ended")
        taken = 0
        view = memoryview(data)
        while taken < len(data) and state.send_credit > 0:
            size = min(len(data) - taken, state.send_credit, MAX_DATA)
            self._emit(FrameType.DATA, stream, view[taken : taken + size])
            state.send_credit -= size
            taken += size
        return taken

    def frame_data(self, stream: int, header: memoryview, size: int) -> None:
        """Pack a DATA header into ``header`` for the ``size`` bytes the caller put after it.

        For callers that read payload straight into their own buffer and write
        the frames themselves (after :meth:`data_to_send`, to keep the order);
        ``size`` must be within the stream's credit and :data:`MAX_DATA`.
        """
        state = self._require(stream)
        if state.local_eof:
            raise MuxError(f"stream {stream} was already ended")
        if not 0 < size <= min(state.send_credit, MAX_DATA):
            raise MuxError(f"{size} bytes do not fit stream {stream}'s credit in one frame")
        HEADER.pack_into(header, 0, FrameType.DATA, stream, size)
        state.send_credit -= size

    def send_eof(self, stream: int) -> None:
        """Half-close: nothing more will be sent on ``stream``."""
        state = self._streams.get(stream)
        if state is None or state.local_eof:
            return
        state.local_eof = True
        self._emit(FrameType.EOF, stream)
        self._forget_if_done(stream, state)

    def reset(self, stream: int) -> None:
        """Abort ``stream`` (a no-op for streams already gone)."""
        if self._streams.pop(stream, None) is not None:
            self._emit(FrameType.RESET, stream)

    def consumed(self, stream: int, size: int) -> None:
        """Report ``size`` received bytes as written on; grants credit back in batches."""
        state = self._streams.get(stream)
        if state is None:
            return
        state.unacknowledged += size
        # Half a window at a time: few CREDIT frames, and the peer never runs dry.
        if state.unacknowledged * 2 >= self.window:
            state.receive_left += state.unacknowledged
            self._emit(FrameType.CREDIT, stream, state.unacknowledged.to_bytes(4, "big"))
            state.unacknowledged = 0

    def ping(self, opaque: int) -> None:
        """Send a PING; the peer answers with a PONG carrying ``opaque``."""
        self._emit(FrameType.PING, 0, opaque.to_bytes(8, "big"))

    # --- incoming ------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[MuxEvent]:
        """Process bytes from the peer; raises :class:`MuxError` on a violation."""
        events: list[MuxEvent] = []
        for frame in self._parser.feed(data):
            event = self._handle(frame)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, frame: Frame) -> MuxEvent | None:
        kind, stream, payload = frame.kind, frame.stream, frame.payload
        if kind in (FrameType.PING, FrameType.PONG):
            if len(payload) != 8:
                raise MuxError(f"{kind.name} payload must be 8 bytes")
            if kind is FrameType.PING:
                self._emit(FrameType.PONG, 0, payload)
                return None
            return PongReceived(int.from_bytes(payload, "big"))
        if kind is FrameType.OPEN:
            return self._on_open(stream, payload)
        state = self._streams.get(stream)
        if state is None:
            # Frames that crossed our RESET (or REFUSED) in flight: nothing to do.
            self._check_known(stream)
            return None
        if kind is FrameType.OPENED and self.client and not payload:
            state.established = True
            return Opened(stream)
        if kind is FrameType.REFUSED and self.client and len(payload) == 1:
            del self._streams[stream]
            return Refused(stream, payload[0])
        if kind is FrameType.DATA:
            return self._on_data(stream, state, payload)
        if kind is FrameType.EOF and not payload:
            if state.remote_eof:
                raise MuxError(f"stream {stream} ended twice")
            state.remote_eof = True
            self._forget_if_done(stream, state)
            return EndReceived(stream)
        if kind is FrameType.RESET and not payload:
            del self._streams[stream]
            return ResetReceived(stream)
        if kind is FrameType.CREDIT and len(payload) == 4:
            increment = int.from_bytes(payload, "big")
            if increment == 0 or state.send_credit + increment > _MAX_ID:
                raise MuxError(f"bad credit increment {increment} on stream {stream}")
            state.send_credit += increment
            return CreditReceived(stream)
        raise MuxError(f"malformed {kind.name} frame on stream {stream}")

    def _on_open(self, stream: int, payload: Payload) -> OpenRequested:
        if self.client:
            raise MuxError("the server may not open streams")
        if stream % 2 == 0 or stream <= self._highest_remote:
            raise MuxError(f"stream id {stream} is not new and odd")
        if len(self._streams) >= self.max_streams:
            raise MuxError(f"too many open streams (limit {self.max_streams})")
        if len(payload) < 3:
            raise MuxError("OPEN without a destination")
        port = int.from_bytes(payload[:2], "big")
        try:
            host = bytes(payload[2:]).decode("ascii")
        except UnicodeDecodeError:
            raise MuxError("OPEN host is not ASCII") from None
        if port == 0 or not host.isprintable():
            raise MuxError("OPEN with a bad host or port")
        self._highest_remote = stream
        self._streams[stream] = _Stream(self.window, self.window)
        return OpenRequested(stream, host, port)

    def _on_data(self, stream: int, state: _Stream, payload: Payload) -> DataReceived:
        if not payload:
            raise MuxError(f"empty DATA on stream {stream}")
        if state.remote_eof:
            raise MuxError(f"DATA after EOF on stream {stream}")
        if len(payload) > state.receive_left:
            raise MuxError(f"stream {stream} sent beyond its credit")
        state.receive_left -= len(payload)
        return DataReceived(stream, payload)

    def _check_known(self, stream: int) -> None:
        known = stream < self._next_id if self.client else stream <= self._highest_remote
        if stream == 0 or not known:
            raise MuxError(f"frame for stream {stream}, which was never opened")

    def _require(self, stream: int) -> _Stream:
        state = self._streams.get(stream)
        if state is None:
            raise MuxError(f"no open stream {stream}")
        return state

    def _forget_if_done(self, stream: int, state: _Stream) -> None:
        if state.local_eof and state.remote_eof:
            self._streams.pop(stream, None)

    def _emit(self, kind: FrameType, stream: int, payload: bytes | memoryview = b"") -> None:
        self._outbox += HEADER.pack(kind, stream, len(payload))
        self._outbox += payload
