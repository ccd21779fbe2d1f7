"""Link, IPv4/IPv6 and TCP headers decoded with :mod:`struct` (dpkt's packet objects are too
slow for the classifier's throughput target): a TCP segment, or why the packet is not one."""

from __future__ import annotations

import struct
from typing import Final

from noisewall.censor.pcap.records import (
    KIND_ETHERNET,
    KIND_IP,
    KIND_LOOPBACK,
    KIND_SLL,
    KIND_SLL2,
    KIND_UNSUPPORTED,
    Segment,
)

_ETHERTYPE_IPV4: Final = 0x0800
_ETHERTYPE_IPV6: Final = 0x86DD
_ETHERTYPE_VLANS: Final = (0x8100, 0x88A8, 0x9100)

_IPV6_EXTENSION_HEADERS: Final = frozenset({0, 43, 60})  # hop-by-hop, routing, destination
_IPV6_AH: Final = 51
_IPV6_MAX_EXTENSIONS: Final = 8
_PROTO_TCP: Final = 6

_TCP_PORTS_SEQ_ACK = struct.Struct("!HHII")

# What the packet decoder reports for packets that are not usable TCP segments.
SKIPPED: Final = 1
_MALFORMED: Final = 2


def _network_layer(frame: bytes, kind: int, offset: int) -> tuple[int, int]:
    """The EtherType-like protocol of the network header and its offset, or -1 and why."""
    if kind == KIND_ETHERNET:
        if len(frame) < 14:
            return -1, _MALFORMED
        ethertype = frame[12] << 8 | frame[13]
        while ethertype in _ETHERTYPE_VLANS:
            if len(frame) < offset + 4:
                return -1, _MALFORMED
            ethertype = frame[offset + 2] << 8 | frame[offset + 3]
            offset += 4
        return ethertype, offset
    if kind in (KIND_IP, KIND_LOOPBACK):
        if len(frame) <= offset:
            return -1, _MALFORMED
        version = frame[offset] >> 4
        if version == 4:
            return _ETHERTYPE_IPV4, offset
        if version == 6:
            return _ETHERTYPE_IPV6, offset
        return -1, _MALFORMED if kind == KIND_IP else SKIPPED
    if kind == KIND_SLL:
        if len(frame) < 16:
            return -1, _MALFORMED
        return frame[14] << 8 | frame[15], offset
    if kind == KIND_SLL2:
        if len(frame) < 20:
            return -1, _MALFORMED
        return frame[0] << 8 | frame[1], offset
    return -1, SKIPPED if kind == KIND_UNSUPPORTED else _MALFORMED


def decode(frame: bytes, kind: int, offset: int) -> Segment | int:
    """One link-layer frame to ``(flow key, seq, ack, flags, payload)``, or why not.

    Returns :data:`SKIPPED` for well-formed frames that are not TCP over IPv4 or
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
            return SKIPPED  # an IP fragment (more-fragments flag or an offset)
        if frame[ip + 9] != _PROTO_TCP:
            return SKIPPED
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
            return SKIPPED  # another protocol, a fragment, or an over-long header chain
    elif ethertype < 0:
        return ip  # why the link layer failed
    else:
        return SKIPPED  # ARP and other non-IP frames

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
