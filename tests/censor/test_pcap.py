"""Capture reading: formats, link types, TCP reassembly, bad input, bounds.

The captures are built here: real TCP exchanges on 127.0.0.1 (their actual
payload bytes and ports, written into Ethernet/IP/TCP packets with correct
sequence numbers), dpkt's pcap and pcapng writers, and hand-built pcap / pcapng
bytes for what dpkt cannot write (big-endian files, several interfaces).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noisewall.censor.pcap import (
    CaptureError,
    CaptureSummary,
    TcpFlow,
    read_flows,
)
from noisewall.records.endpoint import Endpoint

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
T0 = 1_700_000_000.25
MAX = 16384


# --- building packets -----------------------------------------------------------------------


def ip_packet(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    seq: int,
    ack: int = 0,
    flags: int = ACK,
    payload: bytes = b"",
) -> bytes:
    """An IPv4 or IPv6 packet (by the address family of ``src``) carrying one TCP segment."""
    tcp = dpkt.tcp.TCP(
        sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=flags
    )
    tcp.data = payload
    if ":" in src:
        ip6 = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=dpkt.ip.IP_PROTO_TCP,
            hlim=64,
            data=tcp,
        )
        ip6.plen = len(bytes(tcp))
        return bytes(ip6)
    ip = dpkt.ip.IP(
        src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=dpkt.ip.IP_PROTO_TCP, data=tcp
    )
    return bytes(ip)


def ethernet(packet: bytes) -> bytes:
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return (
        b"\x02\x00\x00\x00\x00\x02"
        + b"\x02\x00\x00\x00\x00\x01"
        + struct.pack("!H", ethertype)
        + packet
    )


class Conn:
    """One TCP connection's packets (IP level), with sequence numbers from ISNs and offsets."""

    def __init__(
        self,
        client: tuple[str, int] = ("10.0.0.1", 40000),
        server: tuple[str, int] = ("93.184.216.34", 443),
        client_isn: int = 1000,
        server_isn: int = 500_000,
    ) -> None:
        self.client, self.server = client, server
        self.client_isn, self.server_isn = client_isn, server_isn

    def syn(self) -> bytes:
        return ip_packet(*self.client, *self.server, self.client_isn, 0, SYN)

    def synack(self) -> bytes:
        return ip_packet(
            *self.server, *self.client, self.server_isn, self.client_isn + 1, SYN | ACK
        )

    def handshake(self) -> list[bytes]:
        return [self.syn(), self.synack(), self.c(0, b"", ACK)]

    def c(self, offset: int, data: bytes, flags: int = ACK | PSH) -> bytes:
        """A client segment starting ``offset`` bytes into the client's stream."""
        return ip_packet(
            *self.client,
            *self.server,
            self.client_isn + 1 + offset,
            self.server_isn + 1,
            flags,
            data,
        )

    def s(self, offset: int, data: bytes, flags: int = ACK | PSH) -> bytes:
        return ip_packet(
            *self.server,
            *self.client,
            self.server_isn + 1 + offset,
            self.client_isn + 1,
            flags,
            data,
        )

    def segments(self, side: str, data: bytes, size: int) -> list[bytes]:
        make = self.c if side == "c" else self.s
        return [make(at, data[at : at + size]) for at in range(0, len(data), size)]


def write_pcap(
    path: Path,
    frames: Sequence[bytes],
    *,
    linktype: int = dpkt.pcap.DLT_EN10MB,
    nano: bool = False,
    times: Sequence[float] | None = None,
) -> Path:
    """A little-endian pcap written by dpkt (this machine's byte order)."""
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, snaplen=262144, linktype=linktype, nano=nano)
        for index, frame in enumerate(frames):
            writer.writepkt(frame, ts=times[index] if times else T0 + index * 0.001)
    return path


def pcap_bytes(
    frames: Sequence[bytes], *, order: str = ">", nano: bool = False, linktype: int = 1
) -> bytes:
    """A pcap in the given byte order (dpkt writes only the machine's), packets 1 ms apart."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    units = 10**9 if nano else 10**6
    out = bytearray(struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype))
    for index, frame in enumerate(frames):
        stamp = round(T0 * units) + index * units // 1000
        out += struct.pack(order + "IIII", stamp // units, stamp % units, len(frame), len(frame))
        out += frame
    return bytes(out)


def pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def pcapng_by_hand(
    interfaces: Sequence[tuple[int, int]],
    packets: Sequence[tuple[int, int, bytes]],
    order: str = ">",
) -> bytes:
    """SHB, IDBs ``(linktype, tsresol)`` and EPBs ``(interface, timestamp units, frame)``."""
    out = pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    for linktype, resolution in interfaces:
        options = struct.pack(order + "HH", 9, 1) + bytes([resolution, 0, 0, 0])
        options += struct.pack(order + "HH", 0, 0)
        out += pcapng_block(order, 1, struct.pack(order + "HHI", linktype, 0, 0) + options)
    for interface, stamp, frame in packets:
        header = struct.pack(
            order + "IIIII", interface, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame)
        )
        out += pcapng_block(order, 6, header + frame)
    return out


def flows_of(path: Path, **kwargs: int) -> tuple[list[TcpFlow], CaptureSummary]:
    summary = CaptureSummary()
    return list(read_flows(path, summary=summary, **kwargs)), summary


def one_flow(path: Path, **kwargs: int) -> TcpFlow:
    flows, _ = flows_of(path, **kwargs)
    assert len(flows) == 1, flows
    return flows[0]


# --- a real exchange on loopback ------------------------------------------------------------


async def real_exchange(
    host: str, request_parts: Sequence[bytes], response: bytes
) -> tuple[tuple[str, int], tuple[str, int], bytes, bytes]:
    """Run a TCP exchange on loopback; the real endpoints and the bytes each side received."""
    got_request = bytearray()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = sum(len(part) for part in request_parts)
        got_request.extend(await reader.readexactly(total))
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(host, port)
        for part in request_parts:
            writer.write(part)
            await writer.drain()
        got_response = await asyncio.wait_for(reader.read(), 10)
        client = writer.get_extra_info("sockname")[:2]
        writer.close()
        await writer.wait_closed()
    return client, (host, port), bytes(got_request), got_response


async def test_real_loopback_exchange_reassembles(tmp_path: Path) -> None:
    request = [os.urandom(517), os.urandom(300), os.urandom(2000)]
    response = os.urandom(40_000)
    client, server, got_request, got_response = await real_exchange("127.0.0.1", request, response)
    assert got_request == b"".join(request) and got_response == response

    conn = Conn(client, server, client_isn=0xFFFFFF00, server_isn=123)  # client seq wraps
    packets = conn.handshake()
    offset = 0
    for part in request:  # one segment per write, the last split at an MSS of 1448
        for at in range(0, len(part), 1448):
            packets.append(conn.c(offset + at, part[at : at + 1448]))
        offset += len(part)
    packets += conn.segments("s", got_response, 1448)
    packets += [conn.s(len(got_response), b"", FIN | ACK), conn.c(offset, b"", FIN | ACK)]
    path = write_pcap(tmp_path / "real.pcap", [ethernet(p) for p in packets])

    (flow,) = read_flows(path)
    assert flow.client == Endpoint(*client)
    assert flow.server == Endpoint(*server)
    assert flow.client_data == got_request
    assert flow.server_data == got_response[:MAX]
    assert flow.first_client_segment == request[0]
    assert flow.packets == len(packets)
    assert flow.first_seen == pytest.approx(T0)
    assert flow.last_seen == pytest.approx(T0 + (len(packets) - 1) * 0.001)


async def test_real_ipv6_loopback_exchange(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        client, server, got_request, got_response = await real_exchange(
            "::1", [b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"], b"HTTP/1.1 200 OK\r\n\r\nhi"
        )
    except OSError:
        pytest.skip("no IPv6 loopback")
    conn = Conn(client, server)
    packets = [*conn.handshake(), conn.c(0, got_request), conn.s(0, got_response)]
    flow = one_flow(write_pcap(tmp_path / "v6.pcap", [ethernet(p) for p in packets]))
    assert flow.client == Endpoint("::1", client[1])
    assert str(flow.server) == f"[::1]:{server[1]}"
    assert flow.client_data == got_request
    assert flow.server_data == got_response


# --- reassembly -----------------------------------------------------------------------------


def test_out_of_order_retransmitted_and_overlapping_segments(tmp_path: Path) -> None:
    data = os.urandom(5000)
    conn = Conn()
    segments = conn.segments("c", data, 700)
    rng = random.Random(7)
    shuffled = segments[:]
    rng.shuffle(shuffled)
    extra = [
        conn.c(100, data[100:900]),  # overlaps two segments
        segments[3],  # plain retransmission
        conn.c(4990, data[4990:] + b"\x00" * 0),  # the tail again
        conn.c(650, b"X" * 100),  # conflicting bytes in an overlap: the first copy wins
    ]
    packets = [*conn.handshake(), segments[0], *shuffled, *extra]
    flow = one_flow(write_pcap(tmp_path / "ooo.pcap", [ethernet(p) for p in packets]))
    assert flow.client_data == data
    assert flow.first_client_segment == data[:700]
    assert flow.packets == len(packets)


def test_stream_stops_at_a_gap(tmp_path: Path) -> None:
    data = os.urandom(3000)
    conn = Conn()
    segments = conn.segments("c", data, 500)
    del segments[2]  # bytes 1000..1500 never captured
    packets = [*conn.handshake(), *reversed(segments)]
    flow = one_flow(write_pcap(tmp_path / "gap.pcap", [ethernet(p) for p in packets]))
    assert flow.client_data == data[:1000]
    assert flow.first_client_segment == data[2500:]  # first in capture order


def test_buffers_capped_at_max_bytes(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    conn = Conn()
    packets = [*conn.handshake(), conn.c(0, data[:3000]), *conn.segments("s", data, 1448)]
    packets += conn.segments("c", data, 1000)[3:]
    flow = one_flow(
        write_pcap(tmp_path / "cap.pcap", [ethernet(p) for p in packets]), max_bytes=2500
    )
    assert flow.client_data == data[:2500]
    assert flow.server_data == data[:2500]
    assert flow.first_client_segment == data[:2500]  # the first packet, cut to max_bytes


def test_flow_without_syn(tmp_path: Path) -> None:
    data = os.urandom(2000)
    reply = os.urandom(900)
    conn = Conn(client_isn=77_777, server_isn=1)
    packets = [
        conn.s(5000, b"", ACK),  # a bare ACK of an unknown flow starts nothing
        conn.c(3000, data[:600]),  # the capture starts mid-flow, with a client segment
        conn.s(5000, reply),
        conn.c(3600, data[600:]),
    ]
    flow = one_flow(write_pcap(tmp_path / "nosyn.pcap", [ethernet(p) for p in packets]))
    assert flow.client == Endpoint("10.0.0.1", 40000)
    assert flow.client_data == data
    assert flow.server_data == reply
    assert flow.packets == 3


def test_flow_without_syn_reaches_back_before_its_first_segment(tmp_path: Path) -> None:
    data = os.urandom(1500)
    conn = Conn()
    packets = [conn.c(500, data[500:1000]), conn.c(0, data[:500]), conn.c(1000, data[1000:])]
    flow = one_flow(write_pcap(tmp_path / "back.pcap", [ethernet(p) for p in packets]))
    assert flow.client_data == data
    assert flow.first_client_segment == data[500:1000]


def test_syn_ack_without_syn_names_the_client(tmp_path: Path) -> None:
    conn = Conn()
    packets = [conn.synack(), conn.s(0, b"220 banner\r\n"), conn.c(0, b"EHLO x\r\n")]
    flow = one_flow(write_pcap(tmp_path / "synack.pcap", [ethernet(p) for p in packets]))
    assert flow.client == Endpoint("10.0.0.1", 40000)
    assert flow.server_data == b"220 banner\r\n"
    assert flow.client_data == b"EHLO x\r\n"


def test_data_before_syn_is_ignored_and_rst_payload_is_not_data(tmp_path: Path) -> None:
    conn = Conn()
    packets = [
        *conn.handshake(),
        ip_packet(*conn.client, *conn.server, conn.client_isn - 10, 0, ACK, b"stale"),
        conn.c(0, b"hello"),
        conn.c(-3, b"???hello, world"),  # starts before the stream: the head is cut
        conn.s(0, b"diagnostic text", RST | ACK),
    ]
    flow = one_flow(write_pcap(tmp_path / "rst.pcap", [ethernet(p) for p in packets]))
    assert flow.client_data == b"hello, world"
    assert flow.server_data == b""


def test_syn_with_data(tmp_path: Path) -> None:
    conn = Conn()
    packets = [
        ip_packet(*conn.client, *conn.server, conn.client_isn, 0, SYN, b"fast open"),
        conn.synack(),
        conn.c(9, b" data"),
    ]
    flow = one_flow(write_pcap(tmp_path / "tfo.pcap", [ethernet(p) for p in packets]))
    assert flow.client_data == b"fast open data"


def test_port_reuse_makes_two_flows(tmp_path: Path) -> None:
    first, second = Conn(client_isn=10), Conn(client_isn=999_999)
    packets = [*first.handshake(), first.c(0, b"one"), first.c(3, b"", FIN | ACK)]
    packets += [first.syn()]  # a retransmitted SYN is not a new connection
    packets += [*second.handshake(), second.c(0, b"two")]
    flows, summary = flows_of(write_pcap(tmp_path / "reuse.pcap", [ethernet(p) for p in packets]))
    assert [f.client_data for f in flows] == [b"one", b"two"]
    assert [f.packets for f in flows] == [6, 4]
    assert summary.flows == 2


def test_server_opening_on_a_known_tuple_is_a_new_reversed_connection(tmp_path: Path) -> None:
    conn = Conn()
    reverse = Conn(client=conn.server, server=conn.client)
    packets = [conn.syn(), reverse.syn(), reverse.synack(), reverse.c(0, b"reversed")]
    flows, _ = flows_of(write_pcap(tmp_path / "rev.pcap", [ethernet(p) for p in packets]))
    assert [(str(f.client), f.client_data) for f in flows] == [
        ("10.0.0.1:40000", b""),
        ("93.184.216.34:443", b"reversed"),
    ]


def test_out_of_order_chunks_merge_and_stay_within_max_bytes(tmp_path: Path) -> None:
    data = os.urandom(1000)
    conn = Conn()
    packets = [
        *conn.handshake(),
        conn.c(500, data[500:700]),
        conn.c(600, data[600:900]),  # overlaps the waiting chunk: merged with it
        conn.c(520, data[520:560]),  # inside the waiting chunk: nothing new
        conn.c(300, data[300:500]),  # touches it: merged
        conn.c(950, data[950:]),  # beyond max_bytes: dropped
        conn.c(900, data[900:950]),
        conn.c(0, data[:300]),
    ]
    flow = one_flow(write_pcap(tmp_path / "m.pcap", [ethernet(p) for p in packets]), max_bytes=920)
    assert flow.client_data == data[:920]


def test_too_many_holes_stop_the_stream_at_the_untracked_chunk(tmp_path: Path) -> None:
    data = os.urandom(4000)
    conn = Conn()
    odd = [conn.c(at, data[at : at + 20]) for at in range(20, 4000, 40)]  # 100 chunks, 100 holes
    even = [conn.c(at, data[at : at + 20]) for at in range(0, 4000, 40)]
    packets = [*conn.handshake(), *odd, *even]
    flow = one_flow(write_pcap(tmp_path / "holes.pcap", [ethernet(p) for p in packets]))
    assert flow.client_data == data[: 20 + 64 * 40]  # 64 waiting chunks kept, the 65th lost


def test_mid_flow_reach_back_fills_waiting_chunks(tmp_path: Path) -> None:
    data = os.urandom(1200)
    conn = Conn()
    packets = [
        conn.c(400, data[400:600]),  # the first segment seen: the stream starts here for now
        conn.c(800, data[800:1000]),  # waits for 600..800
        conn.c(0, data[:800]),  # reaches back before the start and fills the hole
        conn.c(1000, data[1000:]),
    ]
    path = write_pcap(tmp_path / "back.pcap", [ethernet(p) for p in packets])
    assert one_flow(path).client_data == data
    assert one_flow(path, max_bytes=700).client_data == data[:700]


def test_invalid_limits_are_value_errors(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "x.pcap", [])
    with pytest.raises(ValueError, match="max_bytes"):
        read_flows(path, max_bytes=0)
    with pytest.raises(ValueError, match="max_flows"):
        read_flows(path, max_flows=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=2999), max_size=12),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    duplicates=st.integers(min_value=0, max_value=6),
    syn=st.booleans(),
    max_bytes=st.integers(min_value=1, max_value=4000),
)
def test_any_segmentation_and_order_reassembles(
    data: bytes, cuts: list[int], seed: int, duplicates: int, syn: bool, max_bytes: int
) -> None:
    """However the stream is cut, reordered and retransmitted, the bytes come out in order."""
    rng = random.Random(seed)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    conn = Conn(client_isn=rng.getrandbits(32))
    pieces = [conn.c(a, data[a:b]) for a, b in itertools.pairwise(bounds)]
    first = pieces[0]
    rest = pieces[1:] + [rng.choice(pieces) for _ in range(duplicates)]
    rng.shuffle(rest)
    # Without a SYN the stream starts at the first data segment seen: make it the first one.
    packets = ([conn.syn()] if syn else []) + [first, *rest]
    with tempfile.TemporaryDirectory() as folder:
        path = write_pcap(Path(folder) / "p.pcap", [ethernet(p) for p in packets])
        flow = one_flow(path, max_bytes=max_bytes)
    assert flow.client_data == data[:max_bytes]
    assert flow.first_client_segment == data[: min(bounds[1], max_bytes)]


# --- formats and link types -----------------------------------------------------------------


def exchange(conn: Conn | None = None) -> tuple[list[bytes], bytes, bytes]:
    conn = conn or Conn()
    request, reply = b"\x16\x03\x01" + os.urandom(300), os.urandom(2000)
    packets = [*conn.handshake(), conn.c(0, request), *conn.segments("s", reply, 1448)]
    return packets, request, reply


def test_ipv6(tmp_path: Path) -> None:
    conn = Conn(("2001:db8::1", 50000), ("2001:db8::2", 443))
    packets, request, reply = exchange(conn)
    flow = one_flow(write_pcap(tmp_path / "v6.pcap", [ethernet(p) for p in packets]))
    assert flow.client == Endpoint("2001:db8::1", 50000)
    assert str(flow.server) == "[2001:db8::2]:443"
    assert (flow.client_data, flow.server_data) == (request, reply)


def test_ipv6_extension_headers(tmp_path: Path) -> None:
    conn = Conn(("2001:db8::1", 50000), ("2001:db8::2", 443))

    def with_hop_by_hop(packet: bytes) -> bytes:
        header, rest = bytearray(packet[:40]), packet[40:]
        header[6] = 0  # hop-by-hop options, then TCP
        struct.pack_into("!H", header, 4, len(rest) + 8)
        return bytes(header) + bytes([6, 0]) + b"\x01\x04\x00\x00\x00\x00" + rest

    packets, request, _ = exchange(conn)
    flow = one_flow(
        write_pcap(tmp_path / "ext.pcap", [ethernet(with_hop_by_hop(p)) for p in packets])
    )
    assert flow.client_data == request


def sll(packet: bytes) -> bytes:
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, ethertype) + packet


def sll2(packet: bytes) -> bytes:
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return struct.pack("!HHiHBB8s", ethertype, 0, 1, 772, 0, 6, b"\x00" * 8) + packet


def vlan(packet: bytes) -> bytes:
    return b"\x02" * 12 + b"\x81\x00\x00\x05\x88\xa8\x00\x06\x08\x00" + packet


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, ethernet),
        (1, vlan),
        (101, lambda p: p),  # LINKTYPE_RAW
        (12, lambda p: p),  # DLT_RAW (BSD)
        (228, lambda p: p),  # LINKTYPE_IPV4
        (113, sll),
        (276, sll2),
        (0, lambda p: struct.pack("<I", 2) + p),  # NULL, written by a little-endian host
        (0, lambda p: struct.pack(">I", 2) + p),  # NULL, written by a big-endian host
        (108, lambda p: struct.pack(">I", 2) + p),  # LOOP
    ],
    ids=["ethernet", "vlan", "raw", "dlt-raw", "ipv4", "sll", "sll2", "null-le", "null-be", "loop"],
)
def test_link_types(tmp_path: Path, linktype: int, frame: Callable[[bytes], bytes]) -> None:
    packets, request, reply = exchange()
    path = write_pcap(tmp_path / "link.pcap", [frame(p) for p in packets], linktype=linktype)
    flows, summary = flows_of(path)
    assert summary.link_type == linktype
    assert [(f.client_data, f.server_data) for f in flows] == [(request, reply)]
    assert summary.tcp_packets == summary.packets == len(packets)


@pytest.mark.parametrize("frame", [sll, lambda p: p], ids=["sll", "raw"])
def test_ipv6_on_other_link_types(tmp_path: Path, frame: Callable[[bytes], bytes]) -> None:
    packets, request, _ = exchange(Conn(("fe80::1", 1234), ("fe80::2", 5222)))
    linktype = 113 if frame is sll else 101
    flow = one_flow(
        write_pcap(tmp_path / "l6.pcap", [frame(p) for p in packets], linktype=linktype)
    )
    assert flow.client_data == request


def test_pcapng_written_by_dpkt(tmp_path: Path) -> None:
    packets, request, reply = exchange()
    path = tmp_path / "d.pcapng"
    with path.open("wb") as out:
        writer = dpkt.pcapng.Writer(out, snaplen=65535)
        for index, packet in enumerate(packets):
            writer.writepkt(ethernet(packet), ts=T0 + index)
    flow = one_flow(path)
    assert (flow.client_data, flow.server_data) == (request, reply)
    assert flow.first_seen == pytest.approx(T0)
    assert flow.last_seen == pytest.approx(T0 + len(packets) - 1)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_with_two_interfaces_of_different_link_types(tmp_path: Path, order: str) -> None:
    one, request_one, _ = exchange(Conn(client=("10.0.0.1", 1111)))
    two, request_two, _ = exchange(Conn(client=("10.0.0.2", 2222)))
    stamp_us = round(T0 * 10**6)
    records = []
    for index, (a, b) in enumerate(zip(one, two, strict=True)):
        records.append((0, stamp_us + index, ethernet(a)))  # microseconds, Ethernet
        records.append((1, (stamp_us + index) * 1000, b))  # nanoseconds, raw IP
    path = tmp_path / "two.pcapng"
    path.write_bytes(pcapng_by_hand([(1, 6), (101, 9)], records, order))
    flows, summary = flows_of(path)
    assert [f.client_data for f in flows] == [request_one, request_two]
    assert [f.first_seen for f in flows] == pytest.approx([T0, T0])
    assert summary.link_type == 1 and summary.malformed == 0


def test_pcapng_sections_of_both_byte_orders(tmp_path: Path) -> None:
    one, request_one, _ = exchange(Conn(client=("10.0.0.1", 1111)))
    two, request_two, _ = exchange(Conn(client=("10.0.0.2", 2222)))
    stamp = round(T0 * 10**6)
    big = pcapng_by_hand([(1, 6)], [(0, stamp, ethernet(p)) for p in one], ">")
    little = pcapng_by_hand([(101, 6)], [(0, stamp, p) for p in two], "<")
    path = tmp_path / "sections.pcapng"
    path.write_bytes(big + little)
    assert [f.client_data for f in flows_of(path)[0]] == [request_one, request_two]


def test_pcapng_simple_and_obsolete_packet_blocks_and_timestamp_offset(tmp_path: Path) -> None:
    packets, request, reply = exchange()
    order = "<"
    shb = pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = struct.pack(order + "HH", 14, 8) + struct.pack(order + "q", 1_000_000)  # tsoffset
    options += struct.pack(order + "HH", 0, 0)
    idb = pcapng_block(order, 1, struct.pack(order + "HHI", 1, 0, 0) + options)
    blocks = []
    for index, packet in enumerate(packets):
        frame = ethernet(packet)
        if index % 2:  # an obsolete packet block, with a timestamp
            header = struct.pack(order + "HHIIII", 0, 0, 0, index, len(frame), len(frame))
            blocks.append(pcapng_block(order, 2, header + frame))
        else:  # a simple packet block: no timestamp, the previous one is used
            blocks.append(pcapng_block(order, 3, struct.pack(order + "I", len(frame)) + frame))
    name_resolution = pcapng_block(order, 4, b"\x00\x00\x00\x00")  # ignored
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(shb + idb + name_resolution + b"".join(blocks))
    flow = one_flow(path)
    assert (flow.client_data, flow.server_data) == (request, reply)
    assert flow.first_seen == 0.0  # a simple packet block before any timestamp
    assert flow.last_seen == pytest.approx(1_000_000 + (len(packets) - 1) * 1e-6)


def test_pcapng_packet_naming_an_unknown_interface_is_malformed(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    stamp = round(T0 * 10**6)
    records = [(0, stamp, ethernet(p)) for p in packets] + [(7, stamp, ethernet(packets[0]))]
    path = tmp_path / "iface.pcapng"
    path.write_bytes(pcapng_by_hand([(1, 6)], records, "<"))
    flows, summary = flows_of(path)
    assert flows[0].client_data == request and summary.malformed == 1


def test_pcapng_interface_of_unsupported_link_type_is_skipped(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    stamp = round(T0 * 10**6)
    records = [(0, stamp, ethernet(p)) for p in packets] + [(1, stamp, b"\x80\x00" * 20)]
    path = tmp_path / "wifi.pcapng"
    path.write_bytes(pcapng_by_hand([(1, 6), (105, 6)], records, ">"))
    flows, summary = flows_of(path)
    assert flows[0].client_data == request and summary.skipped == 1


def test_pcapng_corrupt_packet_block_stops_reading(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    stamp = round(T0 * 10**6)
    good = pcapng_by_hand([(1, 6)], [(0, stamp, ethernet(p)) for p in packets], "<")
    frame = ethernet(packets[0])
    bad = pcapng_block("<", 6, struct.pack("<IIIII", 0, 0, 0, len(frame) + 100, 0) + frame)
    path = tmp_path / "bad.pcapng"
    path.write_bytes(good + bad)
    flows, summary = flows_of(path)
    assert summary.truncated and summary.error is not None and "corrupt" in summary.error
    assert summary.packets == len(packets) and flows[0].client_data == request


def test_pcapng_packet_before_interface_is_capture_error(tmp_path: Path) -> None:
    order = "<"
    shb = pcapng_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    epb = pcapng_block(order, 6, struct.pack(order + "IIIII", 0, 0, 0, 4, 4) + b"abcd")
    path = tmp_path / "order.pcapng"
    path.write_bytes(shb + epb)
    with pytest.raises(CaptureError, match="before any interface"):
        read_flows(path)


def test_pcapng_corrupt_interface_block_is_capture_error(tmp_path: Path) -> None:
    block = bytearray(pcapng_by_hand([(1, 6)], [], "<"))
    block[-4:] = struct.pack("<I", 999)  # the IDB's trailing length disagrees with its leading one
    path = tmp_path / "idb.pcapng"
    path.write_bytes(bytes(block))
    with pytest.raises(CaptureError, match="corrupt interface description block"):
        read_flows(path)


def test_odd_network_headers(tmp_path: Path) -> None:
    conn = Conn()
    hello = bytearray(conn.c(0, b"offloaded"))
    hello[2:4] = b"\x00\x00"  # segmentation offload: IPv4 total length left empty
    v6 = Conn(("2001:db8::1", 50000), ("2001:db8::2", 443))

    def with_ah(packet: bytes) -> bytes:
        header, rest = bytearray(packet[:40]), packet[40:]
        header[6] = 51  # an authentication header, then TCP
        struct.pack_into("!H", header, 4, len(rest) + 16)
        return bytes(header) + bytes([6, 2, 0, 0]) + b"\x00" * 12 + rest

    frames = [
        *[ethernet(p) for p in conn.handshake()],
        ethernet(bytes(hello)),
        *[ethernet(with_ah(p)) for p in [*v6.handshake(), v6.c(0, b"authenticated")]],
        ethernet(with_ah(v6.c(13, b"x"))[:50]),  # the AH runs past the packet: malformed
    ]
    flows, summary = flows_of(write_pcap(tmp_path / "odd.pcap", frames))
    assert [f.client_data for f in flows] == [b"offloaded", b"authenticated"]
    assert summary.malformed == 1


@pytest.mark.parametrize(
    ("linktype", "frame", "skipped", "malformed"),
    [
        (101, b"\x00" * 40, 0, 1),  # raw IP of version 0
        (101, b"", 0, 1),
        (0, struct.pack("<I", 7) + b"\x00" * 40, 1, 0),  # loopback, another family
        (113, b"\x00" * 10, 0, 1),
        (113, struct.pack("!HHH8sH", 0, 772, 6, b"", 0x0806) + b"\x00" * 28, 1, 0),  # ARP
        (276, b"\x08\x00", 0, 1),
        (1, b"\x02" * 12 + b"\x81\x00\x00", 0, 1),  # a VLAN tag cut short
    ],
)
def test_link_layer_garbage(
    tmp_path: Path, linktype: int, frame: bytes, skipped: int, malformed: int
) -> None:
    flows, summary = flows_of(write_pcap(tmp_path / "g.pcap", [frame], linktype=linktype))
    assert flows == []
    assert (summary.packets, summary.skipped, summary.malformed) == (1, skipped, malformed)


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, order: str, nano: bool) -> None:
    packets, request, reply = exchange()
    path = tmp_path / "o.pcap"
    path.write_bytes(pcap_bytes([ethernet(p) for p in packets], order=order, nano=nano))
    flow = one_flow(path)
    assert (flow.client_data, flow.server_data) == (request, reply)
    assert flow.first_seen == pytest.approx(T0, abs=1e-6)
    assert flow.last_seen - flow.first_seen == pytest.approx((len(packets) - 1) * 1e-3, abs=1e-6)


def test_nanosecond_pcap_written_by_dpkt(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    times = [T0 + index * 1e-9 * 7 for index in range(len(packets))]
    path = write_pcap(tmp_path / "n.pcap", [ethernet(p) for p in packets], nano=True, times=times)
    flow = one_flow(path)
    assert flow.client_data == request
    assert isinstance(flow.first_seen, float)
    assert flow.last_seen - flow.first_seen == pytest.approx((len(packets) - 1) * 7e-9, abs=5e-7)


# --- many flows, bounds -----------------------------------------------------------------------


def interleaved(count: int) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    conns = [Conn(client=(f"10.0.1.{i + 1}", 30000 + i), client_isn=i * 7919) for i in range(count)]
    streams = []
    expected = []
    for conn in conns:
        request, reply = os.urandom(1200), os.urandom(3000)
        streams.append(
            [*conn.handshake(), *conn.segments("c", request, 400), *conn.segments("s", reply, 1000)]
        )
        expected.append((request, reply))
    packets = []
    for round_ in range(max(len(s) for s in streams)):
        packets += [s[round_] for s in streams if round_ < len(s)]  # round-robin
    return packets, expected


def test_interleaved_flows_in_order_of_first_appearance(tmp_path: Path) -> None:
    packets, expected = interleaved(5)
    flows, summary = flows_of(write_pcap(tmp_path / "many.pcap", [ethernet(p) for p in packets]))
    assert [(f.client_data, f.server_data) for f in flows] == expected
    assert [f.client.host for f in flows] == [f"10.0.1.{i + 1}" for i in range(5)]
    assert sum(f.packets for f in flows) == summary.tcp_packets == len(packets)
    assert summary.flows == 5 and summary.evicted == 0


def test_flow_table_is_bounded(tmp_path: Path) -> None:
    packets, expected = interleaved(6)
    path = write_pcap(tmp_path / "bounded.pcap", [ethernet(p) for p in packets])
    flows, summary = flows_of(path, max_flows=2)
    assert [f.client.host for f in flows] == [f"10.0.1.{i + 1}" for i in range(6)]
    assert summary.flows == 6
    assert summary.evicted == 4  # the first four were still open when pushed out
    # Pushed out after their SYN: their later packets are dropped, and start no new flows.
    assert [f.packets for f in flows[:4]] == [1, 1, 1, 1]
    assert [(f.client_data, f.server_data) for f in flows[4:]] == expected[4:]


def test_flow_table_far_too_small_still_reads_everything(tmp_path: Path) -> None:
    packets, _ = interleaved(12)
    path = write_pcap(tmp_path / "tiny.pcap", [ethernet(p) for p in packets])
    flows, summary = flows_of(path, max_flows=1)
    # Stragglers of flows forgotten long ago start mid-flow flows: counted, never lost.
    assert sum(f.packets for f in flows) <= summary.tcp_packets == len(packets)
    assert summary.flows == len(flows) >= 12


def test_finished_flows_evicted_whole(tmp_path: Path) -> None:
    packets = []
    expected = []
    for i in range(5):
        conn = Conn(client=(f"10.0.2.{i + 1}", 40000 + i))
        request = os.urandom(100)
        packets += [*conn.handshake(), conn.c(0, request), conn.c(100, b"", FIN | ACK)]
        packets += [conn.s(0, b"", FIN | ACK), conn.c(101, b"", ACK)]
        expected.append(request)
    flows, summary = flows_of(
        write_pcap(tmp_path / "fin.pcap", [ethernet(p) for p in packets]), max_flows=1
    )
    assert [f.client_data for f in flows] == expected
    assert summary.evicted == 0 and all(f.packets == 7 for f in flows)


# --- bad input ------------------------------------------------------------------------------


def test_non_tcp_and_garbage_packets_are_counted_and_skipped(tmp_path: Path) -> None:
    packets, request, reply = exchange()
    udp = dpkt.ip.IP(
        src=b"\x0a\x00\x00\x01",
        dst=b"\x0a\x00\x00\x02",
        p=17,
        data=dpkt.udp.UDP(sport=1, dport=53, data=b"q"),
    )
    icmp6 = ip_packet("2001:db8::1", 1, "2001:db8::2", 2, 0)[:6] + b"\x3a" + b"\x40" * 33
    arp = b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\x00" * 28
    fragment = bytearray(ip_packet("10.0.0.1", 1, "10.0.0.2", 2, 0, payload=b"x" * 50))
    fragment[6] = 0x20  # more fragments
    bad_data_offset = bytearray(ip_packet("10.0.0.1", 1, "10.0.0.2", 2, 0))
    bad_data_offset[32] = 0x40
    frames = [
        ethernet(bytes(udp)),  # skipped
        arp,  # skipped
        ethernet(icmp6[:40]),  # IPv6, not TCP: skipped
        ethernet(bytes(fragment)),  # skipped
        b"",  # malformed from here on
        b"\x01\x02\x03",
        ethernet(b"\x45" + b"\x00" * 10),  # IPv4 header cut short
        ethernet(b"\x4f" + b"\x00" * 39),  # an IPv4 header claiming 60 bytes, 40 there
        ethernet(bytes([0x45, 0, 0, 10]) + b"\x00" * 16),  # total length below the header
        ethernet(ip_packet("10.0.0.1", 1, "10.0.0.2", 2, 0)[:30]),  # TCP header cut short
        ethernet(b"\x60" + b"\x00" * 20),  # IPv6 header cut short
        ethernet(bytes(bad_data_offset)),  # a TCP header claiming 16 bytes
    ]
    rng = random.Random(3)
    mixed = list(frames)
    for packet in packets:
        mixed.insert(rng.randrange(len(mixed) + 1), ethernet(packet))
    flows, summary = flows_of(write_pcap(tmp_path / "junk.pcap", mixed))
    assert [(f.client_data, f.server_data) for f in flows] == [(request, reply)]
    assert summary.packets == len(mixed)
    assert summary.tcp_packets == len(packets)
    assert summary.skipped == 4
    assert summary.malformed == len(frames) - 4


def test_ethernet_padding_is_not_payload(tmp_path: Path) -> None:
    conn = Conn()
    packets = [*conn.handshake(), conn.c(0, b"hi"), conn.c(2, b"!")]
    frames = [ethernet(p).ljust(60, b"\xee") for p in packets]  # minimum frame size
    assert one_flow(write_pcap(tmp_path / "pad.pcap", frames)).client_data == b"hi!"


def test_truncated_capture_yields_the_flows_read_so_far(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    later = Conn(client=("10.9.9.9", 9999))
    frames = [ethernet(p) for p in [*packets, *later.handshake(), later.c(0, b"late data")]]
    whole = write_pcap(tmp_path / "whole.pcap", frames).read_bytes()
    for cut, packets_read in [
        (len(whole) - 3, len(frames) - 1),
        (len(whole) - len(frames[-1]) - 8, len(frames) - 1),
    ]:
        path = tmp_path / f"cut{cut}.pcap"
        path.write_bytes(whole[:cut])
        flows, summary = flows_of(path)
        assert summary.truncated
        assert summary.error is not None and "ends inside" in summary.error
        assert summary.packets == packets_read
        assert flows[0].client_data == request
        assert [f.client.host for f in flows] == ["10.0.0.1", "10.9.9.9"]
        assert flows[1].client_data == b""


def test_truncated_pcapng_yields_the_flows_read_so_far(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    stamp = round(T0 * 10**6)
    whole = pcapng_by_hand([(1, 6)], [(0, stamp, ethernet(p)) for p in packets])
    path = tmp_path / "cut.pcapng"
    path.write_bytes(whole[:-10])
    flows, summary = flows_of(path)
    assert summary.truncated and summary.packets == len(packets) - 1
    assert flows[0].client_data == request


def test_corrupt_record_length_stops_reading_without_a_huge_read(tmp_path: Path) -> None:
    packets, request, _ = exchange()
    data = bytearray(write_pcap(tmp_path / "ok.pcap", [ethernet(p) for p in packets]).read_bytes())
    data += struct.pack("<IIII", 1, 2, 0xFFFFFFF0, 0xFFFFFFF0) + b"\x00" * 100
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    flows, summary = flows_of(path)
    assert summary.truncated and summary.error is not None and "corrupt" in summary.error
    assert flows[0].client_data == request


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap or pcapng capture"),
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00", "invalid pcapng file header"),
        (
            b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a\x01\x00\x00\x00"
            + b"\xff" * 8
            + b"\x1c\x00\x00\x00",
            "without an interface description block",
        ),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105), "unsupported link type 105"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 1, 0, 0, 0, 65535, 1), "unsupported pcap version"),
    ],
    ids=["empty", "http", "short-pcap", "short-pcapng", "no-idb", "wifi", "version"],
)
def test_not_a_capture_raises_capture_error_naming_the_file(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "suspect.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=reason) as caught:
        read_flows(path)  # raised at the call, before any iteration
    assert str(path) in str(caught.value)
    assert caught.value.path == path


def test_missing_file_or_directory_raises_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="No such file"):
        read_flows(tmp_path / "absent.pcap")
    with pytest.raises(CaptureError, match="directory"):
        read_flows(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_reads_from_a_pipe(tmp_path: Path, kind: str) -> None:
    packets, request, reply = exchange()
    frames = [ethernet(p) for p in packets]
    if kind == "pcap":
        content = pcap_bytes(frames, order="<")
    else:
        content = pcapng_by_hand([(1, 6)], [(0, 0, frame) for frame in frames], "<")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    def feed() -> None:
        with pipe.open("wb") as out:
            for at in range(0, len(content), 7):  # in small writes
                out.write(content[at : at + 7])
                out.flush()

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        flow = one_flow(pipe)
    finally:
        writer.join(10)
    assert (flow.client_data, flow.server_data) == (request, reply)


PCAP_HEADERS = [
    struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1),
    struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 113),
    struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 101),
    pcapng_by_hand([(1, 6), (276, 9)], [], "<"),
    pcapng_by_hand([(0, 0x8A)], [], ">"),
]


def read_all_or_capture_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.pcap"
        path.write_bytes(content)
        summary = CaptureSummary()
        try:
            flows = list(read_flows(path, max_bytes=64, max_flows=4, summary=summary))
        except CaptureError as error:
            assert str(path) in str(error)
            return
    assert summary.flows == len(flows)
    assert summary.skipped + summary.malformed + summary.tcp_packets == summary.packets


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_capture_error(content: bytes) -> None:
    read_all_or_capture_error(content)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PCAP_HEADERS), st.binary(max_size=1200))
def test_arbitrary_records_after_a_valid_header(header: bytes, content: bytes) -> None:
    read_all_or_capture_error(header + content)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_valid_captures(data: st.DataObject) -> None:
    """Flip, cut and splice a valid capture: still only flows or CaptureError."""
    packets, _, _ = exchange()
    stamp = round(T0 * 10**6)
    original = data.draw(
        st.sampled_from(
            [
                pcap_bytes([ethernet(p) for p in packets], order="<"),
                pcapng_by_hand(
                    [(1, 6), (101, 9)],
                    [
                        (i % 2, stamp, ethernet(p) if i % 2 == 0 else p)
                        for i, p in enumerate(packets)
                    ],
                    "<",
                ),
            ]
        )
    )
    content = bytearray(original)
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        at = data.draw(st.integers(min_value=0, max_value=len(content) - 1))
        content[at] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(content)))
    read_all_or_capture_error(bytes(content[:cut]))
