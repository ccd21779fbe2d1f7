"""TCP reassembly: each direction's first bytes in sequence order, retransmissions kept once,
the stream stopped at a gap that never fills, and a bounded table of flows."""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from noisewall.censor.pcap.records import Segment
from noisewall.records.endpoint import Endpoint

_GONE_FLOWS_PER_SLOT: Final = 4
"""Keys of the last ``4 * max_flows`` flows produced early are kept to drop their stragglers."""

_MAX_HOLES: Final = 64
"""Out-of-order chunks (separated by holes) one direction keeps waiting at most."""

_TH_FIN: Final = 0x01
_TH_SYN: Final = 0x02
_TH_RST: Final = 0x04
_TH_ACK: Final = 0x10

_SEQ_MASK: Final = 0xFFFFFFFF
_SEQ_HALF: Final = 0x80000000
_SEQ_SPAN: Final = 0x100000000


@dataclass
class TcpFlow:
    """One TCP connection seen in a capture, with the first bytes of each direction.

    ``client`` sent the SYN (or, if the capture starts mid-flow, the first
    payload). ``client_data`` / ``server_data`` are each direction's first
    bytes (up to ``max_bytes``) in sequence order, up to the first gap.
    ``first_client_segment`` is the payload of the first client data packet in
    capture order (the packet the GFW's fully-encrypted rule inspects), cut to
    ``max_bytes``.
    ``packets`` counts the flow's TCP packets in both directions;
    ``first_seen`` / ``last_seen`` are capture timestamps in seconds.
    """

    client: Endpoint
    server: Endpoint
    client_data: bytes
    server_data: bytes
    first_client_segment: bytes
    packets: int
    first_seen: float
    last_seen: float




@dataclass
class CaptureSummary:
    """Totals of one :func:`read_flows` pass, complete once its iterator is exhausted.

    ``link_type`` is the LINKTYPE number of the file (of its first interface,
    for pcapng). ``packets`` counts every packet record; of those,
    ``tcp_packets`` were TCP segments over IPv4 / IPv6, ``skipped`` were
    well-formed but something else (ARP, UDP, ICMP, IP fragments, a link type
    we do not decode, ...) and ``malformed`` could not be decoded. ``flows``
    counts the flows produced, ``evicted`` those produced early, still open,
    because the flow table was full. ``truncated`` is set when the file ends
    inside a record or turns corrupt after its header, with ``error`` saying
    why; the flows read up to there are still produced.
    """

    link_type: int | None = None
    packets: int = 0
    tcp_packets: int = 0
    skipped: int = 0
    malformed: int = 0
    flows: int = 0
    evicted: int = 0
    truncated: bool = False
    error: str | None = None




class _Half:
    """One direction of a flow: its sequence base and reassembled bytes."""

    __slots__ = ("base", "data", "first", "full", "pending", "syn")

    def __init__(self) -> None:
        self.base: int | None = None
        self.data = bytearray()
        self.first: bytes | None = None
        self.full = False
        self.pending: dict[int, bytes] = {}  # out-of-order chunks by stream offset
        self.syn = False

    def set_isn(self, isn: int) -> None:
        """The initial sequence number is known (from a SYN, or the peer's SYN-ACK)."""
        if self.base is None:
            self.base = (isn + 1) & _SEQ_MASK
            self.syn = True

    def add(self, seq: int, payload: bytes, limit: int) -> None:
        """Place one segment's payload (``seq`` is its first byte's sequence number)."""
        base = self.base
        data = self.data
        if base is None:
            self.base = seq
            data += payload[:limit]
            self.full = len(data) >= limit
            return
        off = (seq - base) & _SEQ_MASK
        if off >= _SEQ_HALF:
            off -= _SEQ_SPAN
        end = off + len(payload)
        if off < 0:
            if end < 0 or (end == 0 and self.syn):
                return  # wholly before the stream start: stale or bogus
            if not self.syn:
                self._rebase(seq, off, payload, limit)
                return
            payload = payload[-off:]
            off = 0
        have = len(data)
        if end <= have:
            return  # a retransmission of bytes we have
        if off <= have:
            data += payload[have - off : limit - off]
            if self.pending:
                self._drain()
            if len(data) >= limit:
                self.full = True
                self.pending.clear()
            return
        if off < limit:
            self._hold(off, payload[: limit - off])

    def _hold(self, start: int, chunk: bytes) -> None:
        """Keep an out-of-order chunk, merged with the waiting chunks it touches.

        The waiting chunks stay disjoint and within ``[len(data), limit)``, so a
        direction never holds more than ``limit`` bytes in all. Bytes already
        waiting win over new copies of the same sequence range.
        """
        pending = self.pending
        end = start + len(chunk)
        touching = [
            offset
            for offset, segment in pending.items()
            if offset <= end and offset + len(segment) >= start
        ]
        if not touching and len(pending) >= _MAX_HOLES:
            return  # too many holes to track: this chunk is lost, the stream stops before it
        for offset in touching:
            segment = pending.pop(offset)
            if offset <= start and offset + len(segment) >= end:
                chunk, start, end = segment, offset, offset + len(segment)
                continue
            low, high = min(start, offset), max(end, offset + len(segment))
            merged = bytearray(high - low)
            merged[start - low : end - low] = chunk
            merged[offset - low : offset - low + len(segment)] = segment
            chunk, start, end = bytes(merged), low, high
        pending[start] = chunk

    def _drain(self) -> None:
        """Append the waiting out-of-order segments that the stream now reaches."""
        data = self.data
        pending = self.pending
        while pending:
            have = len(data)
            ready = sorted(offset for offset in pending if offset <= have)
            if not ready:
                return
            for offset in ready:
                segment = pending.pop(offset)
                have = len(data)
                if offset + len(segment) > have:
                    data += segment[have - offset :]

    def _rebase(self, seq: int, off: int, payload: bytes, limit: int) -> None:
        """No SYN seen and a segment reaches back before our start: move the start back.

        Only called when the segment ends at or after the current start, so the
        stream stays contiguous.
        """
        have = len(self.data)
        shift = -off
        merged = bytearray(payload[:shift])  # the bytes before the old start
        merged += self.data  # the bytes we had win over the new copy
        if off + len(payload) > have:
            merged += payload[shift + have :]
        del merged[limit:]
        pending = {
            offset + shift: segment[: limit - offset - shift]
            for offset, segment in self.pending.items()
            if offset + shift < limit
        }
        self.base = seq
        self.data = merged
        self.pending = pending
        if pending:
            self._drain()
        if len(self.data) >= limit:
            self.full = True
            self.pending.clear()


class _Flow:
    """A flow being read: its key (client to server), both halves, counters."""

    __slots__ = ("closed", "first_seen", "halves", "key", "last_seen", "packets", "reverse")

    def __init__(self, key: bytes, ts: float) -> None:
        self.key = key
        self.reverse = _reverse_key(key)
        self.halves = (_Half(), _Half())  # client, server
        self.packets = 0
        self.first_seen = ts
        self.last_seen = ts
        self.closed = 0  # bits 0 / 1: FIN from client / server; bit 2: RST

    @property
    def finished(self) -> bool:
        return self.closed == 3 or self.closed >= 4

    def result(self) -> TcpFlow:
        client, server = _endpoints(self.key)
        client_half, server_half = self.halves
        return TcpFlow(
            client=client,
            server=server,
            client_data=bytes(client_half.data),
            server_data=bytes(server_half.data),
            first_client_segment=client_half.first or b"",
            packets=self.packets,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
        )


class FlowTable:
    """The flows being read, bounded in number, in order of first appearance."""

    def __init__(self, max_bytes: int, max_flows: int, summary: CaptureSummary) -> None:
        self.max_bytes = max_bytes
        self.max_flows = max_flows
        self.summary = summary
        self.by_key: dict[bytes, tuple[_Flow, int]] = {}  # both directions' keys
        self.order: deque[_Flow] = deque()
        self.gone: dict[bytes, None] = {}  # keys of flows produced early, FIFO-bounded

    def add(self, segment: Segment, ts: float) -> TcpFlow | None:
        """Account one TCP segment; returns a flow evicted to make room, if any."""
        key, seq, ack, flags, payload = segment
        entry = self.by_key.get(key)
        evicted = None
        if entry is None or (
            flags & (_TH_SYN | _TH_ACK) == _TH_SYN and _new_connection(entry, seq)
        ):
            new = self._start(key, flags, payload, ts)
            if new is None:
                return None
            if entry is not None:
                entry[0].closed |= 4  # the old connection on this 4-tuple is over
            self.by_key[new.key] = (new, 0)
            self.by_key[new.reverse] = (new, 1)
            self.order.append(new)
            if len(self.order) > self.max_flows:
                evicted = self._evict(self.order.popleft())
            entry = self.by_key[key]
        flow, direction = entry
        flow.packets += 1
        flow.last_seen = ts
        half = flow.halves[direction]
        if flags & _TH_SYN:
            if not flags & _TH_ACK:
                if direction == 0:
                    half.set_isn(seq)
            elif direction == 1:
                half.set_isn(seq)
                flow.halves[0].set_isn((ack - 1) & _SEQ_MASK)  # the client's ISN, acknowledged
            seq = (seq + 1) & _SEQ_MASK
        if flags & (_TH_FIN | _TH_RST):
            if flags & _TH_RST:
                flow.closed |= 4
                return evicted  # an RST's payload is a diagnostic, not stream data
            flow.closed |= 1 << direction
        if payload:
            if half.first is None and direction == 0:
                half.first = payload[: self.max_bytes]
            if not half.full:
                half.add(seq, payload, self.max_bytes)
        return evicted

    def _start(self, key: bytes, flags: int, payload: bytes, ts: float) -> _Flow | None:
        """A new flow for a packet on an unknown 4-tuple, or None if it cannot start one."""
        handshake = flags & (_TH_SYN | _TH_ACK | _TH_RST)
        if handshake == _TH_SYN:  # a SYN: its sender is the client
            self.gone.pop(key, None)
            return _Flow(key, ts)
        if key in self.gone:
            return None  # a late packet of a flow already produced
        if handshake == _TH_SYN | _TH_ACK:  # a SYN-ACK: its sender is the server
            return _Flow(_reverse_key(key), ts)
        if payload and not flags & (_TH_SYN | _TH_RST):  # mid-flow: the first payload's sender
            return _Flow(key, ts)
        return None  # a bare ACK, FIN or RST of a flow we never saw start

    def _evict(self, flow: _Flow) -> TcpFlow:
        """Produce the oldest flow early; remember its keys for a while to drop stragglers."""
        for key in (flow.key, flow.reverse):
            current = self.by_key.get(key)
            if current is not None and current[0] is flow:
                del self.by_key[key]
                self.gone[key] = None
        while len(self.gone) > 2 * _GONE_FLOWS_PER_SLOT * self.max_flows:
            del self.gone[next(iter(self.gone))]
        if not flow.finished:
            self.summary.evicted += 1
        self.summary.flows += 1
        return flow.result()

    def drain(self) -> Iterator[TcpFlow]:
        """Produce every flow still held, in order of first appearance."""
        while self.order:
            flow = self.order.popleft()
            self.summary.flows += 1
            yield flow.result()


def _new_connection(entry: tuple[_Flow, int], seq: int) -> bool:
    """Whether a SYN (without ACK) on a known 4-tuple starts a new connection."""
    flow, direction = entry
    half = flow.halves[direction]
    if half.base is None:
        return direction == 1  # the server side opening: a new connection, reversed
    return half.base != (seq + 1) & _SEQ_MASK  # the same ISN: a retransmitted SYN


def _reverse_key(key: bytes) -> bytes:
    """The flow key of the opposite direction (a key is src addr, dst addr, sport, dport)."""
    size = (len(key) - 4) // 2
    return key[size : 2 * size] + key[:size] + key[-2:] + key[-4:-2]


def _endpoints(key: bytes) -> tuple[Endpoint, Endpoint]:
    size = (len(key) - 4) // 2
    family = socket.AF_INET if size == 4 else socket.AF_INET6
    source = socket.inet_ntop(family, key[:size])
    destination = socket.inet_ntop(family, key[size : 2 * size])
    return (
        Endpoint(source, int.from_bytes(key[-4:-2], "big")),
        Endpoint(destination, int.from_bytes(key[-2:], "big")),
    )
