"""Capture files: classic pcap (either byte order, micro- or nanoseconds, Kuznetzov's) and
pcapng (sections, interfaces, their link types and timestamp resolutions), read record by
record with bounded reads; ``dpkt`` parses only the file header and the pcapng SHB and IDB."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final, Literal

import dpkt

from noisewall.errors import InputError

# How a link type is decoded: an EtherType somewhere, or an IP header at a fixed offset.
KIND_ETHERNET: Final = 0
KIND_SLL: Final = 1
KIND_SLL2: Final = 2
KIND_IP: Final = 3  # the IP version nibble says 4 or 6; anything else is malformed
KIND_LOOPBACK: Final = 4  # a 4-byte address family, then IP; non-IP families are skipped
KIND_UNSUPPORTED: Final = 5  # a later pcapng interface of a link type we do not decode
KIND_BAD_INTERFACE: Final = 6  # a pcapng packet naming an interface that does not exist


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

# (kind, offset of the network header or of the first VLAN tag)
_LINK_DECODING: Final = {
    0: (KIND_LOOPBACK, 4),
    1: (KIND_ETHERNET, 14),
    12: (KIND_IP, 0),
    14: (KIND_IP, 0),
    101: (KIND_IP, 0),
    108: (KIND_LOOPBACK, 4),
    113: (KIND_SLL, 16),
    228: (KIND_IP, 0),
    229: (KIND_IP, 0),
    276: (KIND_SLL2, 20),
}
_UNSUPPORTED: Final = (KIND_UNSUPPORTED, 0)
_BAD_INTERFACE: Final = (KIND_BAD_INTERFACE, 0)

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

# Exceptions dpkt may raise on a corrupt file header, SHB or IDB.
_DPKT_ERRORS = (dpkt.Error, ValueError, struct.error, IndexError)

_Record = tuple[float, bytes, int, int]  # timestamp, frame, link kind, link offset
Segment = tuple[bytes, int, int, int, bytes]  # flow key, seq, ack, flags, payload


class CaptureError(InputError):
    """The file is not a capture this module can read; the message names the file."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason




class Unreadable(Exception):
    """The rest of the file cannot be read (it ends inside a record, or is corrupt)."""


class PcapRecords:
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
                    raise Unreadable("the file ends inside a packet record header")
                return
            seconds, fraction, captured, _ = unpack(head)
            if captured > _MAX_RECORD:
                raise Unreadable(f"corrupt packet record (captured length {captured})")
            frame = read(captured)
            if len(frame) < captured:
                raise Unreadable("the file ends inside a packet")
            yield seconds + fraction / divisor, frame, kind, offset


class PcapngRecords:
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
                    raise Unreadable("a packet block before any interface description block")
                block = self._next_block()
        except Unreadable as exc:
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
                raise Unreadable("the file ends inside a block header")
            return None
        block_type, length = self._block.unpack(head)
        if block_type == _PCAPNG_SHB:
            return self._section(head)
        if length < 12 or length % 4 or length > _MAX_RECORD:
            raise Unreadable(f"corrupt block length {length}")
        body = read(length - 8)
        if len(body) < length - 8:
            raise Unreadable("the file ends inside a block")
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
            raise Unreadable("section header block without a byte-order magic")
        length = self._block.unpack(head)[1]
        if length < 28 or length % 4 or length > _MAX_RECORD:
            raise Unreadable(f"corrupt section header length {length}")
        rest = self._raw.read(length - 12)
        if len(rest) < length - 12:
            raise Unreadable("the file ends inside the section header block")
        shb_class = (
            dpkt.pcapng.SectionHeaderBlockLE
            if magic == _PCAPNG_BOM_LE
            else dpkt.pcapng.SectionHeaderBlock
        )
        try:
            shb = shb_class(head + magic + rest)
        except _DPKT_ERRORS as exc:
            raise Unreadable(f"corrupt section header block ({exc})") from exc
        if shb.v_major != dpkt.pcapng.PCAPNG_VERSION_MAJOR:
            raise Unreadable(f"unsupported pcapng version {shb.v_major}.{shb.v_minor}")
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
            raise Unreadable(f"corrupt interface description block ({exc})") from exc
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
                    raise Unreadable("corrupt enhanced packet block")
                interface, high, low, captured, _ = packet.unpack_from(body)
            elif block_type == _PCAPNG_PB:
                if len(body) < 24:
                    raise Unreadable("corrupt packet block")
                interface, _, high, low, captured, _ = obsolete.unpack_from(body)
            elif block_type == _PCAPNG_SPB:  # no interface (the first) and no timestamp
                if len(body) < 8:
                    raise Unreadable("corrupt simple packet block")
                captured = min(int.from_bytes(body[:4], byteorder), len(body) - 8)
                kind, link_offset, _, _ = self._interface_at(0)
                yield self._last_ts, body[4 : 4 + captured], kind, link_offset
                continue
            else:
                continue
            if captured > len(body) - 24:
                raise Unreadable("corrupt packet block (captured length beyond the block)")
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


def open_records(path: Path, raw: BinaryIO) -> PcapRecords | PcapngRecords:
    """Check the file header and return its packet records, or raise CaptureError.

    Reads the file strictly forward (no seeking), so a pipe works too.
    """
    magic = raw.read(4)
    if not magic:
        raise CaptureError(path, "empty file, not a pcap or pcapng capture")
    if magic in _PCAP_MAGICS_LE or magic in _PCAP_MAGICS_BE:
        return PcapRecords(raw, path, magic)
    if magic == _PCAPNG_SHB.to_bytes(4, "big"):
        return PcapngRecords(raw, path, magic)
    raise CaptureError(path, f"not a pcap or pcapng capture (starts with 0x{magic.hex()})")
