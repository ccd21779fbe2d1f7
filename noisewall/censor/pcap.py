"""Offline capture reading: the TCP flows of a pcap or pcapng file.

:func:`read_flows` turns a capture into :class:`TcpFlow` records, each with the
first bytes of both directions reassembled in sequence order, ready for the
classifiers in :mod:`noisewall.censor.classify` (``noisewall censor classify``).

Formats. Classic pcap in either byte order with micro- or nanosecond
timestamps (and Kuznetzov's modified pcap), and pcapng (any number of sections
and interfaces, each interface with its own link type and timestamp
resolution; enhanced, simple and obsolete packet blocks). Link types: Ethernet
(with 802.1Q / 802.1ad VLAN tags), raw IP, Linux cooked capture v1 and v2 (SLL,
SLL2), and BSD loopback (NULL, LOOP).

``dpkt`` parses the file header and the pcapng section and interface blocks.
The packet records and the link, IPv4, IPv6 and TCP headers are decoded here
with :mod:`struct`, because dpkt's readers and packet objects are too slow for
the classifier's throughput target (its pcap reader alone yields about 400k
records/s and its full packet decoding about 75k packets/s on the reference
machine, where this module reads, decodes and reassembles well over 200k
packets/s), trust the record lengths in the file, and its pcapng reader
applies the first interface's link type to every packet.

Reassembly. Each direction keeps the bytes from its initial sequence number
(the SYN's, or if the capture starts mid-flow the first data segment's) in
sequence order: out-of-order segments wait until the gap before them fills,
retransmitted and overlapping bytes are kept once (first copy wins), and the
stream stops at the first gap that never fills. Only the first ``max_bytes``
bytes of each direction are kept.

Bad input. A file that is not a capture this module can read (bad magic,
short or invalid file header, unsupported link type) raises
:class:`CaptureError` naming the file, before any flow is produced. A capture
that is cut short (the usual result of stopping ``tcpdump`` abruptly) or
corrupt after a valid header is *not* an error: the flows read up to that
point are all produced, and the :class:`CaptureSummary` says ``truncated`` and
why. Packets that are not TCP over IPv4 / IPv6 are counted as ``skipped``,
undecodable ones as ``malformed``; neither stops the reading.

Memory. At most ``max_flows`` flows (default :data:`DEFAULT_MAX_FLOWS`) are
held at once. A flow holds at most ``3 * max_bytes`` payload bytes: per
direction, the reassembled bytes plus the out-of-order bytes waiting for a gap
to fill stay within ``max_bytes`` (waiting chunks are merged, at most 64 holes
are tracked), and the first client segment is cut to ``max_bytes``. So the
table holds at most ``max_flows * 3 * max_bytes`` payload bytes (192 MiB at the
defaults; typical captures use a small fraction, since few flows fill their
buffers). When the table is full, the flow that appeared first is produced
early (``CaptureSummary.evicted`` counts those still open then; their later
packets are ignored, so their counts may be short, and the keys of the last
``4 * max_flows`` such flows are remembered so that their stragglers do not
start new flows). Single reads are bounded too: a pcap record or pcapng block
claiming more than 16 MiB is corruption. Flows come out in order of first appearance.
"""

from __future__ import annotations

import socket
import struct
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import dpkt

from noisewall.errors import InputError
from noisewall.records.endpoint import Endpoint

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FLOWS",
    "SUPPORTED_LINK_TYPES",
    "CaptureError",
    "CaptureSummary",
    "TcpFlow",
    "read_flows",
]

DEFAULT_MAX_BYTES: Final = 16384
"""Bytes kept per flow direction unless the caller asks otherwise."""

DEFAULT_MAX_FLOWS: Final = 4096
"""Flows held at once unless the caller asks otherwise (see the module docstring)."""

_GONE_FLOWS_PER_SLOT: Final = 4
"""Keys of the last ``4 * max_flows`` flows produced early are kept to drop their stragglers."""

_MAX_HOLES: Final = 64
"""Out-of-order chunks (separated by holes) one direction keeps waiting at most."""

_MAX_RECORD: Final = 1 << 24
"""Largest pcap record or pcapng block accepted; anything larger is corruption."""

SUPPORTED_LINK_TYPES: Final = {
    0: "BSD loopback (NULL)",
    1: "Ethernet",
    12: "raw IP",  # DLT_RAW on most BSDs
    14: "raw IP",  # DLT_RAW on OpenBSD
    101: "raw IP",
    108: "OpenBSD loopback (LOOP)",
    113: "Linux cooked capture (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked capture v2 (SLL2)",
}
"""Link types :func:`read_flows` decodes, by LINKTYPE number (tcpdump.org registry)."""

# How a link type is decoded: an EtherType somewhere, or an IP header at a fixed offset.
_KIND_ETHERNET: Final = 0
_KIND_SLL: Final = 1
_KIND_SLL2: Final = 2
_KIND_IP: Final = 3  # the IP version nibble says 4 or 6; anything else is malformed
_KIND_LOOPBACK: Final = 4  # a 4-byte address family, then IP; non-IP families are skipped
_KIND_UNSUPPORTED: Final = 5  # a later pcapng interface of a link type we do not decode
_KIND_BAD_INTERFACE: Final = 6  # a pcapng packet naming an interface that does not exist

# (kind, offset of the network header or of the first VLAN tag)
_LINK_DECODING: Final = {
    0: (_KIND_LOOPBACK, 4),
    1: (_KIND_ETHERNET, 14),
    12: (_KIND_IP, 0),
    14: (_KIND_IP, 0),
    101: (_KIND_IP, 0),
    108: (_KIND_LOOPBACK, 4),
    113: (_KIND_SLL, 16),
    228: (_KIND_IP, 0),
    229: (_KIND_IP, 0),
    276: (_KIND_SLL2, 20),
}
_UNSUPPORTED: Final = (_KIND_UNSUPPORTED, 0)
_BAD_INTERFACE: Final = (_KIND_BAD_INTERFACE, 0)

_ETHERTYPE_IPV4: Final = 0x0800
_ETHERTYPE_IPV6: Final = 0x86DD
_ETHERTYPE_VLANS: Final = (0x8100, 0x88A8, 0x9100)

_PCAP_MAGICS_LE: Final = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1", b"\x34\xcd\xb2\xa1")
_PCAP_MAGICS_BE: Final = (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d", b"\xa1\xb2\xcd\x34")
_PCAPNG_SHB: Final = 0x0A0D0D0A
_PCAPNG_IDB: Final = 1
_PCAPNG_PB: Final = 2
_PCAPNG_SPB: Final = 3
_PCAPNG_EPB: Final = 6
_PCAPNG_BOM_LE: Final = b"\x4d\x3c\x2b\x1a"
_PCAPNG_BOM_BE: Final = b"\x1a\x2b\x3c\x4d"
_PCAPNG_OPT_TSRESOL: Final = 9
_PCAPNG_OPT_TSOFFSET: Final = 14

_IPV6_EXTENSION_HEADERS: Final = frozenset({0, 43, 60})  # hop-by-hop, routing, destination
_IPV6_AH: Final = 51
_IPV6_MAX_EXTENSIONS: Final = 8
_PROTO_TCP: Final = 6

_TH_FIN: Final = 0x01
_TH_SYN: Final = 0x02
_TH_RST: Final = 0x04
_TH_ACK: Final = 0x10

_SEQ_MASK: Final = 0xFFFFFFFF
_SEQ_HALF: Final = 0x80000000
_SEQ_SPAN: Final = 0x100000000

_TCP_PORTS_SEQ_ACK = struct.Struct("!HHII")

# What the packet decoder reports for packets that are not usable TCP segments.
_SKIPPED: Final = 1
_MALFORMED: Final = 2

# Exceptions dpkt may raise on a corrupt file header, SHB or IDB.
_DPKT_ERRORS = (dpkt.Error, ValueError, struct.error, IndexError)

_Record = tuple[float, bytes, int, int]  # timestamp, frame, link kind, link offset
_Segment = tuple[bytes, int, int, int, bytes]  # flow key, seq, ack, flags, payload


class CaptureError(InputError):
    """The file is not a capture this module can read; the message names the file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


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


class _Unreadable(Exception):
    """The rest of the file cannot be read (it ends inside a record, or is corrupt)."""


class _PcapRecords:
    """The packet records of a classic pcap file, after checking its header."""

    def __init__(self, raw: BinaryIO, path: Path, magic: bytes) -> None:
        header = magic + raw.read(24 - len(magic))
        if len(header) < 24:
            raise CaptureError(path, "truncated pcap file header")
        little = header[:4] in _PCAP_MAGICS_LE
        try:
            fields = (dpkt.pcap.LEFileHdr if little else dpkt.pcap.FileHdr)(header)
        except _DPKT_ERRORS as exc:
            raise CaptureError(path, f"invalid pcap file header ({exc})") from exc
        if fields.v_major != dpkt.pcap.PCAP_VERSION_MAJOR:
            raise CaptureError(path, f"unsupported pcap version {fields.v_major}.{fields.v_minor}")
        self.link_type: int = _link_type(path, fields.linktype & 0xFFFF)
        self._raw = raw
        self._record = struct.Struct("<IIII" if little else ">IIII")
        # Kuznetzov's modified pcap adds interface index, protocol, type and padding.
        self._record_size = 24 if fields.magic == dpkt.pcap.MODPCAP_MAGIC else 16
        self._divisor = 1e9 if fields.magic == dpkt.pcap.TCPDUMP_MAGIC_NANO else 1e6

    def __iter__(self) -> Iterator[_Record]:
        read = self._raw.read
        unpack = self._record.unpack_from
        size = self._record_size
        divisor = self._divisor
        kind, offset = _LINK_DECODING[self.link_type]
        while True:
            head = read(size)
            if len(head) < size:
                if head:
                    raise _Unreadable("the file ends inside a packet record header")
                return
            seconds, fraction, captured, _ = unpack(head)
            if captured > _MAX_RECORD:
                raise _Unreadable(f"corrupt packet record (captured length {captured})")
            frame = read(captured)
            if len(frame) < captured:
                raise _Unreadable("the file ends inside a packet")
            yield seconds + fraction / divisor, frame, kind, offset


class _PcapngRecords:
    """The packets of a pcapng file, after checking its first section and interface."""

    def __init__(self, raw: BinaryIO, path: Path, magic: bytes) -> None:
        self._raw = raw
        self._block = struct.Struct("<II")
        self._interfaces: list[tuple[int, int, float, int]] = []
        self._first_link_type: int | None = None
        self._last_ts = 0.0
        try:
            block = self._next_block(magic)
            while block is not None and not self._interfaces:
                if block[0] in (_PCAPNG_EPB, _PCAPNG_SPB, _PCAPNG_PB):
                    raise _Unreadable("a packet block before any interface description block")
                block = self._next_block()
        except _Unreadable as exc:
            raise CaptureError(path, f"invalid pcapng file header ({exc})") from exc
        if self._first_link_type is None:
            raise CaptureError(path, "pcapng file without an interface description block")
        self.link_type: int = _link_type(path, self._first_link_type)

    def _next_block(self, prefix: bytes = b"") -> tuple[int, bytes] | None:
        """The next block's type and body (after the 8-byte header); handles SHB and IDB.

        ``prefix`` is the start of the block header, if already read.
        """
        read = self._raw.read
        head = prefix + read(8 - len(prefix))
        if len(head) < 8:
            if head:
                raise _Unreadable("the file ends inside a block header")
            return None
        block_type, length = self._block.unpack(head)
        if block_type == _PCAPNG_SHB:
            return self._section(head)
        if length < 12 or length % 4 or length > _MAX_RECORD:
            raise _Unreadable(f"corrupt block length {length}")
        body = read(length - 8)
        if len(body) < length - 8:
            raise _Unreadable("the file ends inside a block")
        if block_type == _PCAPNG_IDB:
            self._interface(head + body)
        return block_type, body

    def _section(self, head: bytes) -> tuple[int, bytes]:
        """A section header block: byte order, version; forget the interfaces."""
        magic = self._raw.read(4)
        if magic == _PCAPNG_BOM_LE:
            self._block = struct.Struct("<II")
        elif magic == _PCAPNG_BOM_BE:
            self._block = struct.Struct(">II")
        else:
            raise _Unreadable("section header block without a byte-order magic")
        length = self._block.unpack(head)[1]
        if length < 28 or length % 4 or length > _MAX_RECORD:
            raise _Unreadable(f"corrupt section header length {length}")
        rest = self._raw.read(length - 12)
        if len(rest) < length - 12:
            raise _Unreadable("the file ends inside the section header block")
        shb_class = (
            dpkt.pcapng.SectionHeaderBlockLE
            if magic == _PCAPNG_BOM_LE
            else dpkt.pcapng.SectionHeaderBlock
        )
        try:
            shb = shb_class(head + magic + rest)
        except _DPKT_ERRORS as exc:
            raise _Unreadable(f"corrupt section header block ({exc})") from exc
        if shb.v_major != dpkt.pcapng.PCAPNG_VERSION_MAJOR:
            raise _Unreadable(f"unsupported pcapng version {shb.v_major}.{shb.v_minor}")
        self._interfaces = []
        return _PCAPNG_SHB, rest

    def _interface(self, block: bytes) -> None:
        """An interface description block: link type, timestamp resolution and offset."""
        little = self._block.format.startswith("<")
        idb_class = (
            dpkt.pcapng.InterfaceDescriptionBlockLE
            if little
            else dpkt.pcapng.InterfaceDescriptionBlock
        )
        try:
            idb = idb_class(block)
        except _DPKT_ERRORS as exc:
            raise _Unreadable(f"corrupt interface description block ({exc})") from exc
        divisor = 1e6
        offset = 0
        for option in idb.opts:
            value = bytes(option.data)
            if option.code == _PCAPNG_OPT_TSRESOL and value:
                exponent = value[0] & 0x7F
                divisor = float((2 if value[0] & 0x80 else 10) ** min(exponent, 64))
            elif option.code == _PCAPNG_OPT_TSOFFSET and len(value) == 8:
                offset = int.from_bytes(value, "little" if little else "big", signed=True)
        link_type = int(idb.linktype)
        if self._first_link_type is None:
            self._first_link_type = link_type
        kind, link_offset = _LINK_DECODING.get(link_type, _UNSUPPORTED)
        self._interfaces.append((kind, link_offset, divisor, offset))

    def __iter__(self) -> Iterator[_Record]:
        packet = struct.Struct(self._block.format[0] + "IIIII")
        obsolete = struct.Struct(self._block.format[0] + "HHIIII")
        byteorder: Literal["little", "big"] = "little" if packet.format[0] == "<" else "big"
        while (block := self._next_block()) is not None:
            block_type, body = block
            if block_type == _PCAPNG_SHB:
                packet = struct.Struct(self._block.format[0] + "IIIII")
                obsolete = struct.Struct(self._block.format[0] + "HHIIII")
                byteorder = "little" if packet.format[0] == "<" else "big"
                continue
            if block_type == _PCAPNG_EPB:
                if len(body) < 24:
                    raise _Unreadable("corrupt enhanced packet block")
                interface, high, low, captured, _ = packet.unpack_from(body)
            elif block_type == _PCAPNG_PB:
                if len(body) < 24:
                    raise _Unreadable("corrupt packet block")
                interface, _, high, low, captured, _ = obsolete.unpack_from(body)
            elif block_type == _PCAPNG_SPB:  # no interface (the first) and no timestamp
                if len(body) < 8:
                    raise _Unreadable("corrupt simple packet block")
                captured = min(int.from_bytes(body[:4], byteorder), len(body) - 8)
                kind, link_offset, _, _ = self._interface_at(0)
                yield self._last_ts, body[4 : 4 + captured], kind, link_offset
                continue
            else:
                continue
            if captured > len(body) - 24:
                raise _Unreadable("corrupt packet block (captured length beyond the block)")
            kind, link_offset, divisor, offset = self._interface_at(interface)
            ts = offset + ((high << 32) | low) / divisor
            self._last_ts = ts
            yield ts, body[20 : 20 + captured], kind, link_offset

    def _interface_at(self, index: int) -> tuple[int, int, float, int]:
        if index < len(self._interfaces):
            return self._interfaces[index]
        return (*_BAD_INTERFACE, 1e6, 0)


def _link_type(path: Path, link_type: int) -> int:
    if link_type not in SUPPORTED_LINK_TYPES:
        raise CaptureError(
            path,
            f"unsupported link type {link_type} (supported: Ethernet, raw IP, "
            "Linux cooked capture, BSD loopback)",
        )
    return link_type


def _open_records(path: Path, raw: BinaryIO) -> _PcapRecords | _PcapngRecords:
    """Check the file header and return its packet records, or raise CaptureError.

    Reads the file strictly forward (no seeking), so a pipe works too.
    """
    magic = raw.read(4)
    if not magic:
        raise CaptureError(path, "empty file, not a pcap or pcapng capture")
    if magic in _PCAP_MAGICS_LE or magic in _PCAP_MAGICS_BE:
        return _PcapRecords(raw, path, magic)
    if magic == _PCAPNG_SHB.to_bytes(4, "big"):
        return _PcapngRecords(raw, path, magic)
    raise CaptureError(path, f"not a pcap or pcapng capture (starts with 0x{magic.hex()})")


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


class _FlowTable:
    """The flows being read, bounded in number, in order of first appearance."""

    def __init__(self, max_bytes: int, max_flows: int, summary: CaptureSummary) -> None:
        self.max_bytes = max_bytes
        self.max_flows = max_flows
        self.summary = summary
        self.by_key: dict[bytes, tuple[_Flow, int]] = {}  # both directions' keys
        self.order: deque[_Flow] = deque()
        self.gone: dict[bytes, None] = {}  # keys of flows produced early, FIFO-bounded

    def add(self, segment: _Segment, ts: float) -> TcpFlow | None:
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


def _network_layer(frame: bytes, kind: int, offset: int) -> tuple[int, int]:
    """The EtherType-like protocol of the network header and its offset, or -1 and why."""
    if kind == _KIND_ETHERNET:
        if len(frame) < 14:
            return -1, _MALFORMED
        ethertype = frame[12] << 8 | frame[13]
        while ethertype in _ETHERTYPE_VLANS:
            if len(frame) < offset + 4:
                return -1, _MALFORMED
            ethertype = frame[offset + 2] << 8 | frame[offset + 3]
            offset += 4
        return ethertype, offset
    if kind in (_KIND_IP, _KIND_LOOPBACK):
        if len(frame) <= offset:
            return -1, _MALFORMED
        version = frame[offset] >> 4
        if version == 4:
            return _ETHERTYPE_IPV4, offset
        if version == 6:
            return _ETHERTYPE_IPV6, offset
        return -1, _MALFORMED if kind == _KIND_IP else _SKIPPED
    if kind == _KIND_SLL:
        if len(frame) < 16:
            return -1, _MALFORMED
        return frame[14] << 8 | frame[15], offset
    if kind == _KIND_SLL2:
        if len(frame) < 20:
            return -1, _MALFORMED
        return frame[0] << 8 | frame[1], offset
    return -1, _SKIPPED if kind == _KIND_UNSUPPORTED else _MALFORMED


def _decode(frame: bytes, kind: int, offset: int) -> _Segment | int:
    """One link-layer frame to ``(flow key, seq, ack, flags, payload)``, or why not.

    Returns :data:`_SKIPPED` for well-formed frames that are not TCP over IPv4 or
    IPv6 and :data:`_MALFORMED` for frames that cannot be decoded.
    """
    ethertype, ip = _network_layer(frame, kind, offset)
    n = len(frame)
    if ethertype == _ETHERTYPE_IPV4:
        if n < ip + 20:
            return _MALFORMED
        first = frame[ip]
        header = (first & 0x0F) * 4
        total = frame[ip + 2] << 8 | frame[ip + 3]
        if first >> 4 != 4 or header < 20 or n < ip + header:
            return _MALFORMED
        if total == 0:  # segmentation offload leaves the length field empty
            end = n
        elif total < header:
            return _MALFORMED
        else:
            end = min(ip + total, n)  # drops Ethernet padding; shorter if snapped
        if (frame[ip + 6] & 0x3F) or frame[ip + 7]:
            return _SKIPPED  # an IP fragment (more-fragments flag or an offset)
        if frame[ip + 9] != _PROTO_TCP:
            return _SKIPPED
        addresses = frame[ip + 12 : ip + 20]
        tcp = ip + header
    elif ethertype == _ETHERTYPE_IPV6:
        if n < ip + 40 or frame[ip] >> 4 != 6:
            return _MALFORMED
        length = frame[ip + 4] << 8 | frame[ip + 5]
        end = min(ip + 40 + length, n) if length else n
        addresses = frame[ip + 8 : ip + 40]
        next_header = frame[ip + 6]
        tcp = ip + 40
        for _ in range(_IPV6_MAX_EXTENSIONS):
            if next_header in _IPV6_EXTENSION_HEADERS:
                size = (frame[tcp + 1] + 1) * 8 if tcp + 2 <= end else 0
            elif next_header == _IPV6_AH:
                size = (frame[tcp + 1] + 2) * 4 if tcp + 2 <= end else 0
            else:
                break
            if not size or tcp + size > end:
                return _MALFORMED
            next_header = frame[tcp]
            tcp += size
        if next_header != _PROTO_TCP:
            return _SKIPPED  # another protocol, a fragment, or an over-long header chain
    elif ethertype < 0:
        return ip  # why the link layer failed
    else:
        return _SKIPPED  # ARP and other non-IP frames

    if end < tcp + 20:
        return _MALFORMED
    data_offset = (frame[tcp + 12] >> 4) * 4
    if data_offset < 20 or tcp + data_offset > end:
        return _MALFORMED
    _, _, seq, ack = _TCP_PORTS_SEQ_ACK.unpack_from(frame, tcp)
    return (
        addresses + frame[tcp : tcp + 4],
        seq,
        ack,
        frame[tcp + 13],
        frame[tcp + data_offset : end],
    )


def read_flows(
    path: Path,
    max_bytes: int = DEFAULT_MAX_BYTES,
    *,
    max_flows: int = DEFAULT_MAX_FLOWS,
    summary: CaptureSummary | None = None,
) -> Iterator[TcpFlow]:
    """The TCP flows of the capture at ``path``, in order of first appearance.

    The file header is checked before this returns: a file that is not a
    readable capture (or cannot be opened) raises :class:`CaptureError` here.
    The flows are then produced lazily; a truncated or corrupt remainder ends
    them early, setting ``summary.truncated`` and ``summary.error`` instead of
    raising. Pass a :class:`CaptureSummary` to receive the totals, complete once
    the iterator is exhausted.
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be at least 1")
    if max_flows < 1:
        raise ValueError("max_flows must be at least 1")
    path = Path(path)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise CaptureError(path, exc.strerror or str(exc)) from exc
    try:
        records = _open_records(path, raw)
    except BaseException:
        raw.close()
        raise
    if summary is None:
        summary = CaptureSummary()
    summary.link_type = records.link_type
    flows = _read_flows(raw, records, _FlowTable(max_bytes, max_flows, summary))
    weakref.finalize(flows, raw.close)  # if the flows are dropped unread
    return flows


def _read_flows(
    raw: BinaryIO, records: _PcapRecords | _PcapngRecords, table: _FlowTable
) -> Iterator[TcpFlow]:
    summary = table.summary
    with raw:
        add = table.add
        packets = tcp_packets = skipped = malformed = 0
        try:
            for ts, frame, kind, offset in records:
                packets += 1
                segment = _decode(frame, kind, offset)
                if isinstance(segment, int):
                    if segment == _SKIPPED:
                        skipped += 1
                    else:
                        malformed += 1
                    continue
                tcp_packets += 1
                evicted = add(segment, ts)
                if evicted is not None:
                    yield evicted
        except _Unreadable as exc:
            summary.truncated = True
            summary.error = str(exc)
        except OSError as exc:
            summary.truncated = True
            summary.error = f"read error: {exc.strerror or exc}"
        finally:
            summary.packets += packets
            summary.tcp_packets += tcp_packets
            summary.skipped += skipped
            summary.malformed += malformed
    yield from table.drain()
