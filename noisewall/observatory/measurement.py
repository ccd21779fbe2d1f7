"""One measurement line (OONI base data format) into the rows the detector reads.

Two kinds of measurement are understood:

* ``noisewall_messaging`` (written by ``noisewall probe``): one row per entry
  of ``test_keys.features``;
* OONI's own ``whatsapp`` test (ts-018): rows ``endpoints``, ``registration``
  and ``web`` under the vantage ``ooni``, so real OONI data can be analysed.

Everything here is pure: bytes or a dict in, a :class:`ParsedMeasurement` or a
:class:`MeasurementError` out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from noisewall.errors import InputError
from noisewall.records.measurement import TEST_NAME, NoisewallTestKeys
from noisewall.records.measurement import parse_ooni_time as record_time

OONI_WHATSAPP_TEST = "whatsapp"
OONI_VANTAGE = "ooni"
DEFAULT_VANTAGE = "direct"
OONI_FEATURES = ("endpoints", "registration", "web")
UNKNOWN_FAILURE = "unknown_failure"

_OONI_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


class MeasurementError(InputError):
    """A measurement line that cannot be used: bad JSON, wrong types, unknown test."""


def parse_ooni_time(text: str) -> float:
    """OONI's ``"YYYY-MM-DD HH:MM:SS"`` (UTC) as POSIX seconds."""
    try:
        return record_time(text)
    except ValueError as exc:
        raise MeasurementError(str(exc)) from None


_Strict = ConfigDict(strict=True, extra="ignore", frozen=True)
_Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class TcpStatus(BaseModel):
    """df-005 ``status``."""

    model_config = _Strict
    success: bool
    failure: str | None = None


class TcpConnect(BaseModel):
    """df-005 TCPConnect (only what the observatory reads)."""

    model_config = _Strict
    ip: str
    port: int
    status: TcpStatus


class WhatsappTestKeys(BaseModel):
    """ts-018 test keys."""

    model_config = _Strict
    registration_server_status: Literal["ok", "blocked"]
    registration_server_failure: str | None = None
    whatsapp_web_status: Literal["ok", "blocked"]
    whatsapp_web_failure: str | None = None
    whatsapp_endpoints_status: Literal["ok", "blocked"]
    tcp_connect: list[TcpConnect] | None = None


class BaseMeasurement(BaseModel):
    """df-000 top-level keys the observatory needs (others are kept in the raw record)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    id: str | None = Field(default=None, min_length=1, max_length=200)
    measurement_start_time: str
    probe_asn: str = Field(min_length=1)
    probe_cc: str
    probe_network_name: str | None = None
    test_name: str
    annotations: dict[str, Any] = Field(default_factory=dict)
    test_keys: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One feature's outcome in one measurement: the detector's unit of data."""

    feature: str
    ok: bool
    failure: str | None
    throughput_kbps: float | None


@dataclass(frozen=True, slots=True)
class ParsedMeasurement:
    """A validated measurement: its identity, time series key, rows and stored JSON."""

    id: str
    time: float
    network: str
    vantage: str
    test_name: str
    round: int | None
    rows: tuple[FeatureRow, ...]
    raw: bytes
    digest: bytes


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in (prefix, *error["loc"]) if p != "")
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _noisewall_rows(keys: Mapping[str, Any]) -> tuple[FeatureRow, ...]:
    try:
        parsed = NoisewallTestKeys.model_validate(keys, strict=True)
    except ValidationError as exc:
        raise MeasurementError(_describe(exc, "test_keys")) from None
    rows = []
    for name, result in parsed.features.items():
        ok = result.status == "ok"
        failure = None if ok else (result.failure or UNKNOWN_FAILURE)
        rows.append(FeatureRow(name, ok, failure, result.throughput_kbps if ok else None))
    return tuple(rows)


def _whatsapp_rows(keys: Mapping[str, Any]) -> tuple[FeatureRow, ...]:
    try:
        parsed = WhatsappTestKeys.model_validate(keys)
    except ValidationError as exc:
        raise MeasurementError(_describe(exc, "test_keys")) from None
    endpoint_failures = Counter(c.status.failure or UNKNOWN_FAILURE
                                for c in parsed.tcp_connect or () if not c.status.success)
    endpoints_failure = (endpoint_failures.most_common(1)[0][0] if endpoint_failures
                         else UNKNOWN_FAILURE)

    def row(feature: str, status: str, failure: str | None) -> FeatureRow:
        ok = status == "ok"
        return FeatureRow(feature, ok, None if ok else (failure or UNKNOWN_FAILURE), None)

    return (
        row("endpoints", parsed.whatsapp_endpoints_status, endpoints_failure),
        row("registration", parsed.registration_server_status,
            parsed.registration_server_failure),
        row("web", parsed.whatsapp_web_status, parsed.whatsapp_web_failure),
    )


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The measurement as compact, key-sorted JSON: what is stored and what its digest covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _round(annotations: Mapping[str, Any]) -> int | None:
    value = annotations.get("round")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdecimal():
        return int(value)
    return None


def parse_measurement(obj: object, raw: bytes | None = None) -> ParsedMeasurement:
    """Validate one decoded measurement; raises :class:`MeasurementError` naming the field.

    ``raw`` is the line it was decoded from, stored as is; without it the
    measurement is stored as canonical (key-sorted, compact) JSON.
    """
    if not isinstance(obj, dict):
        raise MeasurementError(f"a measurement is a JSON object, not {type(obj).__name__}")
    try:
        base = BaseMeasurement.model_validate(obj)
    except ValidationError as exc:
        raise MeasurementError(_describe(exc, "")) from None
    when = parse_ooni_time(base.measurement_start_time)
    if base.test_name == TEST_NAME:
        rows = _noisewall_rows(base.test_keys)
        default_vantage = DEFAULT_VANTAGE
        if base.id is None:
            raise MeasurementError("id: a noisewall measurement needs its UUID4 id")
    elif base.test_name == OONI_WHATSAPP_TEST:
        rows = _whatsapp_rows(base.test_keys)
        default_vantage = OONI_VANTAGE
    else:
        raise MeasurementError(f"test_name {base.test_name!r} is not "
                               f"{TEST_NAME!r} or {OONI_WHATSAPP_TEST!r}")
    try:
        stored = raw if raw is not None else canonical_json(obj)
    except ValueError as exc:  # NaN or infinity somewhere in the record
        raise MeasurementError(f"not strict JSON: {exc}") from None
    digest = hashlib.blake2b(stored, digest_size=16).digest()
    vantage = base.annotations.get("vantage")
    return ParsedMeasurement(
        # OONI collectors clear ``id``: the content digest stands in, so re-ingesting is a no-op.
        id=base.id if base.id is not None else f"ooni-{digest.hex()}",
        time=when,
        network=base.probe_network_name or base.probe_asn,
        vantage=vantage if isinstance(vantage, str) and vantage else default_vantage,
        test_name=base.test_name,
        round=_round(base.annotations),
        rows=rows,
        raw=stored,
        digest=digest,
    )


def parse_line(line: bytes | str) -> ParsedMeasurement:
    """Decode and validate one JSON line."""
    raw = (line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line).strip()
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise MeasurementError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise MeasurementError(f"bad JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise MeasurementError("bad JSON: nested too deeply") from None
    return parse_measurement(obj, raw)

