"""The censor's record of its decisions: one JSON line per flow, and the metrics."""

from __future__ import annotations

import json
from typing import Any, TextIO

from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.metrics import CensorMetrics
from noisewall.censor.policy import Decision
from noisewall.clock import Clock


class DecisionLog:
    """Counts each decision in the metrics and writes it to the log, if there are any."""

    def __init__(self, clock: Clock, log: TextIO | None, metrics: CensorMetrics | None) -> None:
        self._clock = clock
        self._log = log
        self.metrics = metrics

    def decided(self, ident: int, record: FlowRecord, decision: Decision) -> None:
        """Record one flow's decision."""
        if self.metrics is not None:
            self.metrics.flow(record.protocol, decision.effect, decision.rule or "default")
        if self._log is None:
            return
        entry: dict[str, Any] = {
            "time": self._clock.now(),
            "flow": ident,
            "client": str(record.client),
            "server": str(record.server),
            "protocol": record.protocol,
            "transport": record.transport,
            "sni": record.sni,
            "host": record.host,
            "ja3": record.ja3,
            "ja4": record.ja4,
            "query": record.query,
            "fully_encrypted": record.fully_encrypted,
            "exemption": record.exemption,
            **decision.as_json(),
        }
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()

    def moved(self, size: int, *, upstream: bool) -> None:
        """Count relayed bytes."""
        if self.metrics is not None:
            self.metrics.bytes(upstream, size)
