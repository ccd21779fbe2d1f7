"""The noisewall measurement record: OONI's base data format with ``noisewall_messaging`` keys.

Field-by-field reference: ``docs/measurements.md``. The probe builds each
feature's outcome as a :class:`FeatureResult` and writes it with
:meth:`FeatureResult.as_json`; the observatory validates what it reads with
:class:`NoisewallTestKeys` (strict types), so both sides share one schema.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from noisewall.records.names import Feature

TEST_NAME = "noisewall_messaging"
TEST_VERSION = "0.1.0"
DATA_FORMAT_VERSION = "0.2.0"

Phase: TypeAlias = Literal["tcp_connect", "socks5", "noise_handshake", "tls_handshake",
                           "register", "send", "receipt", "upload", "download"]

_OONI_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def ooni_time(posix: float) -> str:
    """POSIX seconds as OONI's ``"YYYY-MM-DD HH:MM:SS"`` (UTC)."""
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%d %H:%M:%S")


def parse_ooni_time(text: str) -> float:
    """OONI's ``"YYYY-MM-DD HH:MM:SS"`` (UTC) as POSIX seconds; ValueError when it is not."""
    if not _OONI_TIME.fullmatch(text):
        raise ValueError(f"time {text!r} is not 'YYYY-MM-DD HH:MM:SS'")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise ValueError(f"time {text!r}: {exc}") from None


_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class FeatureResult(BaseModel):
    """``test_keys.features[name]``: the outcome of one feature on one path in one round.

    Mutable while the probe measures (it fills the timings in as phases
    complete); read back strictly by the observatory.
    """

    model_config = ConfigDict(extra="ignore")
    status: Literal["ok", "failed"] = "ok"
    failure: str | None = None
    failure_phase: Phase | None = None
    t_connect: _Seconds | None = None
    t_handshake: _Seconds | None = None
    t_round_trip: _Seconds | None = None
    bytes: Annotated[int, Field(ge=0)] = 0
    throughput_kbps: _Seconds | None = None
    runtime: _Seconds | None = 0.0

    def fail(self, failure: str, phase: Phase | None) -> None:
        """Record the failure that ended this feature's measurement."""
        self.status = "failed"
        self.failure = failure
        self.failure_phase = phase

    def as_json(self) -> dict[str, Any]:
        """The ``test_keys.features[...]`` object (timings to the microsecond)."""
        return {name: round(value, 6) if isinstance(value, float) else value
                for name, value in self.model_dump().items()}


class NoisewallTestKeys(BaseModel):
    """The part of a ``noisewall_messaging`` measurement's ``test_keys`` the observatory reads."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    features: dict[Feature, FeatureResult] = Field(min_length=1)
