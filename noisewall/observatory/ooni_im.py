"""OONI's four instant-messaging tests as feature rows, read by their own verdict keys (pure).

One row per verdict the test writes, named after the key (``signal_backend``
for ``signal_backend_status`` / ``signal_backend_failure``); the row is "ok"
when the status is ``"ok"`` (or the ``*_blocking`` flag is false) and carries
the test's own failure string where it has one. A verdict the measurement
does not hold (``null`` or absent: the probe did not get that far) gives no
row. Specs: ts-018 (whatsapp), ts-019 (facebook_messenger), ts-020
(telegram), ts-029 (signal).

Tolerant where OONI's own readers are (``fastpath``): legacy probes
(ooniprobe 2.x, ooniprobe-android 2.0) write ``"failure": false`` or ``""``
for "no failure", and either a status string or a boolean flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noisewall.observatory.rows import FeatureRow, MeasurementError


@dataclass(frozen=True, slots=True)
class Verdict:
    """One verdict of an OONI test: the row's feature name and the keys it is read from.

    ``status`` holds ``"ok"`` / ``"blocked"``; ``blocking`` a boolean (true:
    blocked); exactly one of them is set. ``failure`` is the failure-string key,
    if the test writes one for this verdict.
    """

    feature: str
    status: str | None = None
    blocking: str | None = None
    failure: str | None = None


IM_TESTS: dict[str, tuple[Verdict, ...]] = {
    "whatsapp": (
        Verdict("whatsapp_endpoints", status="whatsapp_endpoints_status"),
        Verdict("registration_server", status="registration_server_status",
                failure="registration_server_failure"),
        Verdict("whatsapp_web", status="whatsapp_web_status", failure="whatsapp_web_failure"),
    ),
    "signal": (
        Verdict("signal_backend", status="signal_backend_status",
                failure="signal_backend_failure"),
    ),
    "telegram": (
        Verdict("telegram_tcp", blocking="telegram_tcp_blocking"),
        Verdict("telegram_http", blocking="telegram_http_blocking"),
        Verdict("telegram_web", status="telegram_web_status", failure="telegram_web_failure"),
    ),
    "facebook_messenger": (
        Verdict("facebook_tcp", blocking="facebook_tcp_blocking"),
        Verdict("facebook_dns", blocking="facebook_dns_blocking"),
    ),
}

_STATUS = {"ok": True, "blocked": False}


def failure_value(value: object, where: str) -> str | None:
    """An OONI failure field: a string, or None / ``false`` / ``""`` for "no failure"."""
    if value is None or value is False or value == "":
        return None
    if isinstance(value, str):
        return value
    raise MeasurementError(f"{where}: a failure is a string or null, not {value!r}")


def _ok(keys: Mapping[str, Any], verdict: Verdict) -> bool | None:
    if verdict.status is not None:
        value = keys.get(verdict.status)
        if value is None:
            return None
        if value not in _STATUS:
            raise MeasurementError(f"test_keys.{verdict.status}: {value!r} is not "
                                   "'ok', 'blocked' or null")
        return _STATUS[value]
    assert verdict.blocking is not None
    flag = keys.get(verdict.blocking)
    if flag is None:
        return None
    if not isinstance(flag, bool):
        raise MeasurementError(f"test_keys.{verdict.blocking}: {flag!r} is not a boolean or null")
    return not flag


def im_rows(test_name: str, keys: Mapping[str, Any]) -> tuple[FeatureRow, ...]:
    """The rows of one measurement of ``test_name`` (one of :data:`IM_TESTS`)."""
    rows = []
    for verdict in IM_TESTS[test_name]:
        ok = _ok(keys, verdict)
        if ok is None:
            continue
        failure = (None if verdict.failure is None
                   else failure_value(keys.get(verdict.failure), f"test_keys.{verdict.failure}"))
        rows.append(FeatureRow(verdict.feature, ok, failure, None))
    return tuple(rows)

