"""What the flow classifiers report, and the flow record the policy matches on.

Every classifier in :mod:`noisewall.censor.classify` is a sans-IO function
``inspect(data: bytes) -> Detection | NeedMore | None`` over the first bytes a
client sent: a :class:`Detection` when it recognises its protocol,
:data:`NEED_MORE` when the bytes so far are a valid prefix that more data could
complete (e.g. a ClientHello split over segments), ``None`` when it is sure the
data is not its protocol. Classifiers never raise on any input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from noisewall.records.endpoint import Endpoint


class NeedMore(Enum):
    """Sentinel type: the classifier needs more bytes to decide."""

    NEED_MORE = "need_more"


NEED_MORE = NeedMore.NEED_MORE


@dataclass(frozen=True)
class Detection:
    """One classifier's positive verdict: protocol label, confidence 0..1, and evidence."""

    protocol: str
    confidence: float
    features: Mapping[str, Any] = field(default_factory=dict)


InspectResult = Detection | NeedMore | None


@dataclass
class FlowRecord:
    """Everything the censor knows about one TCP flow, as the policy sees it.

    ``protocol`` is the label of the most confident detection (``unknown`` if
    none). ``fully_encrypted`` is the GFW 2021-2023 rule's verdict on the
    first client data, ``exemption`` the rule (Ex1..Ex5) that exempted it,
    ``popcount`` the average set bits per byte it measured.
    """

    client: Endpoint
    server: Endpoint
    protocol: str = "unknown"
    transport: str = "tcp"
    confidence: float = 0.0
    detections: list[Detection] = field(default_factory=list)
    sni: str | None = None
    host: str | None = None
    ja3: str | None = None
    ja4: str | None = None
    query: str | None = None
    fully_encrypted: bool = False
    exemption: str | None = None
    popcount: float | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view (for decision logs and ``classify --json``)."""
        return {
            "client": str(self.client),
            "server": str(self.server),
            "protocol": self.protocol,
            "transport": self.transport,
            "confidence": round(self.confidence, 3),
            "sni": self.sni,
            "host": self.host,
            "ja3": self.ja3,
            "ja4": self.ja4,
            "query": self.query,
            "fully_encrypted": self.fully_encrypted,
            "exemption": self.exemption,
            "popcount": None if self.popcount is None else round(self.popcount, 3),
            "detections": [
                {"protocol": d.protocol, "confidence": d.confidence, "features": dict(d.features)}
                for d in self.detections
            ],
        }
