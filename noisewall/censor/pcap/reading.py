"""Reading a capture into :class:`TcpFlow` records (see the package documentation)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

from noisewall.censor.pcap.decoding import SKIPPED, decode
from noisewall.censor.pcap.reassembly import CaptureSummary, FlowTable, TcpFlow
from noisewall.censor.pcap.records import (
    CaptureError,
    PcapngRecords,
    PcapRecords,
    Unreadable,
    open_records,
)

DEFAULT_MAX_BYTES: Final = 16384
"""Bytes kept per flow direction unless the caller asks otherwise."""

DEFAULT_MAX_FLOWS: Final = 4096
"""Flows held at once unless the caller asks otherwise (see the package documentation)."""


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
        records = open_records(path, raw)
    except BaseException:
        raw.close()
        raise
    if summary is None:
        summary = CaptureSummary()
    summary.link_type = records.link_type
    flows = _read_flows(raw, records, FlowTable(max_bytes, max_flows, summary))
    weakref.finalize(flows, raw.close)  # if the flows are dropped unread
    return flows


def _read_flows(
    raw: BinaryIO, records: PcapRecords | PcapngRecords, table: FlowTable
) -> Iterator[TcpFlow]:
    summary = table.summary
    with raw:
        add = table.add
        packets = tcp_packets = skipped = malformed = 0
        try:
            for ts, frame, kind, offset in records:
                packets += 1
                segment = decode(frame, kind, offset)
                if isinstance(segment, int):
                    if segment == SKIPPED:
                        skipped += 1
                    else:
                        malformed += 1
                    continue
                tcp_packets += 1
                evicted = add(segment, ts)
                if evicted is not None:
                    yield evicted
        except Unreadable as exc:
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
