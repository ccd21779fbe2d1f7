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

from noisewall.censor.pcap.reading import DEFAULT_MAX_BYTES, DEFAULT_MAX_FLOWS, read_flows
from noisewall.censor.pcap.reassembly import CaptureSummary, TcpFlow
from noisewall.censor.pcap.records import SUPPORTED_LINK_TYPES, CaptureError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FLOWS",
    "SUPPORTED_LINK_TYPES",
    "CaptureError",
    "CaptureSummary",
    "TcpFlow",
    "read_flows",
]
