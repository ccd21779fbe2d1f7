"""One measurement line (OONI base data format) into the rows the detector reads.

Two kinds of measurement are understood:

* ``noisewall_messaging`` (written by ``noisewall probe``, schema in
  :mod:`noisewall.records.measurement`): one row per entry of
  ``test_keys.features``;
* ``noisewall_keyword_filtering`` (the keyword probe's): validated, stored,
  no rows (:mod:`.keyword_store` reads them back for ``filtered`` events);
* OONI's four instant-messaging tests (whatsapp, signal, telegram,
  facebook_messenger; :mod:`.ooni_im`): one row per verdict key, under the
  vantage ``ooni``, so real OONI data can be analysed.

Any other test raises :class:`UnsupportedTest` (ingest counts them per test
name rather than reporting each line).

Everything here is pure: bytes or a dict in, a :class:`ParsedMeasurement` or a
:class:`MeasurementError` out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from noisewall.observatory.keyword_store import TEST_NAME as KEYWORD_TEST
from noisewall.observatory.keyword_store import keyword_rows
from noisewall.observatory.ooni_im import IM_TESTS, im_rows
from noisewall.observatory.rows import FeatureRow, MeasurementError, UnsupportedTest
from noisewall.records.measurement import TEST_NAME, NoisewallTestKeys
from noisewall.records.measurement import parse_ooni_time as record_time

#: The stored round is a signed 64-bit integer.
ROUND_RANGE = range(-(2**63), 2**63)
_INTEGER_TEXT = re.compile(r"-?[0-9]+")
OONI_VANTAGE = "ooni"
DEFAULT_VANTAGE = "direct"
UNKNOWN_FAILURE = "unknown_failure"


def parse_ooni_time(text: str) -> float:
    """OONI's ``"YYYY-MM-DD HH:MM:SS"`` (UTC) as POSIX seconds."""
    try:
        return record_time(text)
    except ValueError as exc:
        raise MeasurementError(str(exc)) from None


class BaseMeasurement(BaseModel):
    """df-000 top-level keys the observatory needs (others are kept in the raw record)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    id: str | None = Field(default=None, min_length=1, max_length=200)
    measurement_start_time: str
    probe_asn: str = Field(min_length=1)
    probe_cc: str
    probe_network_name: str | None = None
    test_name: str
    annotations: dict[str, Any] | None = None
    test_keys: dict[str, Any]


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


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The measurement as compact, key-sorted JSON: what is stored and what its digest covers.

    Raises :class:`MeasurementError` for a string that is not Unicode text (a
    lone surrogate), ``ValueError`` / ``TypeError`` for NaN, infinity or a
    value JSON cannot hold.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise _not_unicode(exc) from None


def _not_unicode(exc: UnicodeEncodeError) -> MeasurementError:
    return MeasurementError(f"not Unicode text: a string holds the lone surrogate "
                            f"\\u{ord(exc.object[exc.start]):04x}")


def _round(annotations: Mapping[str, Any]) -> int | None:
    """``annotations.round``: an integer or a string of one; None when it is neither."""
    value = annotations.get("round")
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    if value not in ROUND_RANGE:
        raise MeasurementError(f"annotations.round: {value} does not fit in 64 bits; skipped")
    return value


def parse_measurement(obj: object, raw: bytes | None = None) -> ParsedMeasurement:
    """Validate one decoded measurement; raises :class:`MeasurementError` naming the field.

    ``raw`` is the line it was decoded from, stored as is; without it the
    measurement is stored as canonical (key-sorted, compact) JSON.
    """
    if not isinstance(obj, dict):
        raise MeasurementError(f"a measurement is a JSON object, not {type(obj).__name__}")
    test_name = obj.get("test_name")
    if not isinstance(test_name, str):
        raise MeasurementError("test_name: a measurement names its test")
    if test_name not in {TEST_NAME, KEYWORD_TEST} and test_name not in IM_TESTS:
        raise UnsupportedTest(test_name)
    try:
        base = BaseMeasurement.model_validate(obj)
    except ValidationError as exc:
        raise MeasurementError(_describe(exc, "")) from None
    when = parse_ooni_time(base.measurement_start_time)
    annotations = base.annotations or {}
    if test_name in {TEST_NAME, KEYWORD_TEST}:
        rows = (_noisewall_rows if test_name == TEST_NAME else keyword_rows)(base.test_keys)
        default_vantage = DEFAULT_VANTAGE
        if base.id is None:
            raise MeasurementError("id: a noisewall measurement needs its UUID4 id")
    else:
        rows = im_rows(test_name, base.test_keys)
        default_vantage = OONI_VANTAGE
    try:
        stored = raw if raw is not None else canonical_json(obj)
    except ValueError as exc:  # NaN or infinity somewhere in the record
        raise MeasurementError(f"not strict JSON: {exc}") from None
    digest = hashlib.blake2b(stored, digest_size=16).digest()
    vantage = annotations.get("vantage")
    return ParsedMeasurement(
        # OONI collectors clear ``id``: the content digest stands in, so re-ingesting is a no-op.
        id=base.id if base.id is not None else f"ooni-{digest.hex()}",
        time=when,
        network=base.probe_network_name or base.probe_asn,
        vantage=vantage if isinstance(vantage, str) and vantage else default_vantage,
        test_name=base.test_name,
        round=_round(annotations),
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
    if b"\\u" in raw:  # an escape may decode to a lone surrogate, which is not text
        try:
            json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError as exc:
            raise _not_unicode(exc) from None
    return parse_measurement(obj, raw)

