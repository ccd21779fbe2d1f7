"""Writing measurements: the trace of network observations and the OONI-format record (sans-IO).

The record's schema is :mod:`noisewall.records.measurement` (shared with the
observatory); field-by-field reference: ``docs/measurements.md``. Wall-clock fields come
from the injected clock (the lab's simulated time); ``t0`` / ``t`` /
``runtime`` are real elapsed seconds, as the network experiences them.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from noisewall import __version__
from noisewall.records.measurement import (
    DATA_FORMAT_VERSION,
    TEST_NAME,
    TEST_VERSION,
    FeatureResult,
    ooni_time,
)

NOISE_PROTOCOL = "Noise_XX_25519_AESGCM_SHA256"


def report_id(posix: float, asn: str) -> str:
    """A report id in OONI's shape: start time, ASN, random part."""
    stamp = datetime.fromtimestamp(posix, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}_{asn}_{secrets.token_urlsafe(24)}"


def kbps(num_bytes: int, seconds: float) -> float | None:
    """Payload kbit/s (1000 bits), or None when nothing was timed."""
    if num_bytes <= 0 or seconds <= 0:
        return None
    return num_bytes * 8 / seconds / 1000


@dataclass
class Trace:
    """The network observations of one measurement, in OONI's sub-formats.

    Times are seconds since the trace began (``measurement_start_time``),
    from the monotonic clock.
    """

    origin: float = field(default_factory=time.monotonic)
    tcp_connect: list[dict[str, Any]] = field(default_factory=list)
    tls_handshakes: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    network_events: list[dict[str, Any]] = field(default_factory=list)
    noise_handshakes: list[dict[str, Any]] = field(default_factory=list)
    _transactions: int = 0

    def now(self) -> float:
        """Seconds since the trace began."""
        return round(time.monotonic() - self.origin, 6)

    def transaction(self) -> int:
        """A fresh transaction id (groups the events of one feature's operation)."""
        self._transactions += 1
        return self._transactions

    def connect(self, ip: str, port: int, *, t0: float, failure: str | None, tid: int,
                tags: list[str]) -> None:
        """A TCP connect (df-005) and its ``connect`` network event (df-008)."""
        t = self.now()
        self.tcp_connect.append({
            "ip": ip, "port": port, "status": {"failure": failure, "success": failure is None},
            "t0": t0, "t": t, "tags": tags, "transaction_id": tid,
        })
        self.event("connect", f"{_host(ip)}:{port}", t0=t0, failure=failure, tid=tid, tags=tags,
                   proto="tcp")

    def event(self, operation: str, address: str | None, *, t0: float, failure: str | None,
              tid: int, tags: list[str], num_bytes: int | None = None,
              proto: str | None = None) -> None:
        """A network event (df-008): ``connect``, ``read``, ``write``, ..."""
        entry: dict[str, Any] = {"operation": operation, "failure": failure, "t0": t0,
                                 "t": self.now(), "tags": tags, "transaction_id": tid}
        if address is not None:
            entry["address"] = address
        if num_bytes is not None:
            entry["num_bytes"] = num_bytes
        if proto is not None:
            entry["proto"] = proto
        self.network_events.append(entry)

    def noise_handshake(self, address: str, *, protocol: str, framing: str, t0: float,
                        failure: str | None, tags: list[str]) -> None:
        """A Noise handshake (noisewall's own sub-format)."""
        self.noise_handshakes.append({
            "address": address, "protocol": protocol, "framing": framing, "t0": t0,
            "t": self.now(), "failure": failure, "tags": tags,
        })

    def tls_handshake(self, address: str, server_name: str | None, *, t0: float,
                      failure: str | None, tid: int, tags: list[str],
                      cipher_suite: str = "", tls_version: str = "",
                      negotiated_protocol: str = "",
                      peer_certificates: list[bytes] | None = None) -> None:
        """A TLS handshake (df-006)."""
        self.tls_handshakes.append({
            "network": "tcp", "address": address, "server_name": server_name,
            "cipher_suite": cipher_suite, "tls_version": tls_version,
            "negotiated_protocol": negotiated_protocol, "no_tls_verify": True,
            "peer_certificates": [_binary(c) for c in peer_certificates or []],
            "failure": failure, "t0": t0, "t": self.now(), "tags": tags, "transaction_id": tid,
        })

    def request(self, method: str, url: str, address: str, *, t0: float, failure: str | None,
                tid: int, tags: list[str], status: int | None = None,
                body_length: int | None = None) -> None:
        """An HTTP transaction (df-001); bodies are encrypted media, so only their length."""
        self.requests.append({
            "network": "tcp", "address": address, "alpn": "http/1.1", "failure": failure,
            "request": {"url": url, "method": method, "headers": {}, "body": "",
                        "body_is_truncated": True, "x_transport": "tcp"},
            "response": {"code": status, "headers": {}, "body": "",
                         "body_is_truncated": True, "body_length": body_length},
            "t0": t0, "t": self.now(), "tags": tags, "transaction_id": tid,
        })


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _binary(data: bytes) -> dict[str, str]:
    return {"format": "base64", "data": base64.b64encode(data).decode("ascii")}


@dataclass(frozen=True)
class MeasurementMeta:
    """What every measurement of one probe run shares."""

    report_id: str
    test_start_time: float
    probe_asn: str
    probe_cc: str
    probe_ip: str
    probe_network_name: str | None


def build_measurement(meta: MeasurementMeta, *, vantage: str, round_no: int, start: float,
                      runtime: float, results: dict[str, FeatureResult],
                      trace: Trace) -> dict[str, Any]:
    """One OONI-format measurement: one probe round on one vantage path."""
    features = {name: result.as_json() for name, result in results.items()}
    return ooni_record(meta, vantage=vantage, round_no=round_no, start=start, runtime=runtime,
                       test_name=TEST_NAME, test_version=TEST_VERSION, test_keys={
                           "features": features,
                           "tcp_connect": trace.tcp_connect,
                           "tls_handshakes": trace.tls_handshakes,
                           "requests": trace.requests,
                           "network_events": trace.network_events,
                           "noise_handshakes": trace.noise_handshakes,
                           "status": {
                               "ok": [n for n, r in results.items() if r.status == "ok"],
                               "failed": [n for n, r in results.items() if r.status == "failed"],
                           },
                       })


def ooni_record(meta: MeasurementMeta, *, vantage: str, round_no: int, start: float,
                runtime: float, test_name: str, test_version: str,
                test_keys: dict[str, Any]) -> dict[str, Any]:
    """OONI's base data format around one test's ``test_keys`` (one round, one vantage)."""
    return {
        "id": str(uuid.uuid4()),
        "annotations": {"vantage": vantage, "round": str(round_no), "engine_name": "noisewall",
                        "engine_version": __version__},
        "data_format_version": DATA_FORMAT_VERSION,
        "extensions": {"tcpconnect": 0, "tlshandshake": 0, "httpt": 0, "netevents": 0},
        "input": None,
        "measurement_start_time": ooni_time(start),
        "probe_asn": meta.probe_asn,
        "probe_cc": meta.probe_cc,
        "probe_ip": meta.probe_ip,
        "probe_network_name": meta.probe_network_name,
        "report_id": meta.report_id,
        "software_name": "noisewall",
        "software_version": __version__,
        "test_keys": test_keys,
        "test_name": test_name,
        "test_runtime": round(runtime, 6),
        "test_start_time": ooni_time(meta.test_start_time),
        "test_version": test_version,
    }
