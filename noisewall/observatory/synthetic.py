"""Synthetic noisewall measurements with known events: for the benchmark and the tests.

Each generated measurement follows the probe contract (OONI base format,
``noisewall_messaging``). Fine rounds have loopback-like throughput jitter
(log-normal) and rare single failures; scripted :class:`Injected` events make
a feature fail (blocked), fail at random (intermittent) or sit on a flat
policed rate (throttled) over a range of rounds.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from noisewall.observatory.engine import sql_string
from noisewall.records.measurement import TEST_NAME, ooni_time
from noisewall.records.names import FEATURES

NORMAL_KBPS = {"text": 4000.0, "photo": 90000.0, "video": 120000.0, "voice": 60000.0,
               "location": 3000.0}
_PHASE = {"text": "noise_handshake", "photo": "tls_handshake", "video": "tls_handshake",
          "voice": "tls_handshake", "location": "noise_handshake", "register": "register",
          "tcp": "tcp_connect"}


@dataclass(frozen=True, slots=True)
class Injected:
    """A scripted event on one feature of one vantage, over rounds ``[start, end)``."""

    kind: Literal["blocked", "throttled", "intermittent"]
    feature: str
    start: int
    end: int | None = None
    vantage: str = "direct"
    failure: str = "connection_reset"
    rate_kbps: float = 128.0
    success: float = 0.5

    def covers(self, vantage: str, feature: str, round_number: int) -> bool:
        """True when this event acts on that vantage, feature and round."""
        return (vantage == self.vantage and feature == self.feature
                and self.start <= round_number < (self.end if self.end is not None else 1 << 62))


@dataclass(frozen=True, slots=True)
class SyntheticNetwork:
    """One vantage network: its name, ASN, paths, features and scripted events."""

    name: str
    asn: str
    vantages: Sequence[str] = ("direct",)
    features: Sequence[str] = FEATURES
    events: Sequence[Injected] = ()


def _feature_result(rng: random.Random, feature: str, event: Injected | None,
                    stray_failure_rate: float) -> dict[str, Any]:
    normal = NORMAL_KBPS.get(feature)
    failed: str | None = None
    rate = None if normal is None else normal * rng.lognormvariate(0.0, 0.3)
    if event is not None and event.kind == "throttled" and rate is not None:
        rate = event.rate_kbps * rng.uniform(0.92, 1.04)
    elif event is not None and (event.kind == "blocked" or rng.random() >= event.success):
        failed = event.failure
    elif rng.random() < stray_failure_rate:
        failed = "generic_timeout_error"
    if failed is not None:
        return {"status": "failed", "failure": failed, "failure_phase": _PHASE[feature],
                "t_connect": 0.001, "t_handshake": None, "t_round_trip": None, "bytes": 0,
                "throughput_kbps": None, "runtime": 0.01}
    return {"status": "ok", "failure": None, "failure_phase": None, "t_connect": 0.0004,
            "t_handshake": 0.003, "t_round_trip": 0.004, "bytes": 65536,
            "throughput_kbps": None if rate is None else round(rate, 3), "runtime": 0.02}


def synthetic_measurements(network: SyntheticNetwork, *, rounds: int, start: float,
                           interval: float, seed: int,
                           stray_failure_rate: float = 0.003) -> Iterator[dict[str, Any]]:
    """One measurement per (round, vantage) of ``network``, in time order."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data, not secrets
    report_id = f"synthetic_{network.asn}_{seed}"
    for round_number in range(rounds):
        when = ooni_time(start + round_number * interval)
        for vantage in network.vantages:
            features = {}
            for feature in network.features:
                event = next((e for e in network.events
                              if e.covers(vantage, feature, round_number)), None)
                features[feature] = _feature_result(rng, feature, event, stray_failure_rate)
            yield {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "annotations": {"vantage": vantage, "round": str(round_number),
                                "engine_name": "noisewall"},
                "data_format_version": "0.2.0", "input": None,
                "measurement_start_time": when, "test_start_time": when,
                "probe_asn": network.asn, "probe_cc": "ZZ", "probe_ip": "127.0.0.1",
                "probe_network_name": network.name, "report_id": report_id,
                "software_name": "noisewall", "software_version": "0.1.0",
                "test_name": TEST_NAME, "test_version": "0.1.0", "test_runtime": 0.1,
                "test_keys": {
                    "features": features,
                    "status": {"ok": [f for f, r in features.items() if r["status"] == "ok"],
                               "failed": [f for f, r in features.items()
                                          if r["status"] == "failed"]},
                    "noise_handshakes": [], "tcp_connect": [],
                },
            }


def _uniform(seed: int, tag: int) -> str:
    """SQL: a reproducible uniform draw in (0, 1] per result row (53 bits of a hash)."""
    return (f"((intDiv(sipHash64({seed}, m, fi, {tag}), 2048) + 1) / 9007199254740992.0)")


def synthetic_sql(network: SyntheticNetwork, *, rounds: int, start: float, interval: float,
                  seed: int, stray_failure_rate: float = 0.003) -> tuple[str, str]:
    """SQL that writes what ingesting :func:`synthetic_measurements` would, made in the engine.

    Two ``INSERT ... SELECT`` statements over ``numbers()``: the ``results`` rows
    (one per measurement and feature, drawn by the same rules as
    :func:`synthetic_measurements`: log-normal throughput, rare stray failures,
    the scripted events; hashes instead of Python's generator, so not the same
    draws) and the ``measurements`` rows. Their ``raw`` is a short stand-in
    (id, time, network, vantage, round), not the 2 kB measurement: analysis
    never reads it. For a benchmark store of millions of measurements, which
    ingesting JSON lines would take too long to build.
    """
    vantages = "[" + ", ".join(sql_string(v) for v in network.vantages) + "]"
    features = "[" + ", ".join(sql_string(f) for f in network.features) + "]"
    rated = [f for f in network.features if f in NORMAL_KBPS]
    normal = (f"transform(feature, [{', '.join(sql_string(f) for f in rated)}], "
              f"[{', '.join(repr(NORMAL_KBPS[f]) for f in rated)}], 0.0)")
    conditions = ", ".join(
        f"vantage = {sql_string(e.vantage)} AND feature = {sql_string(e.feature)} "
        f"AND round >= {e.start}" + ("" if e.end is None else f" AND round < {e.end}")
        + f", {i}" for i, e in enumerate(network.events, 1))
    event = f"multiIf({conditions}, 0)" if network.events else "0"

    def attribute(values: list[str], default: str) -> str:
        """SQL: the value of the row's event (``default`` when there are no events)."""
        return f"[{', '.join(values)}][event]" if values else default

    kind = attribute([sql_string(e.kind) for e in network.events], "''")
    failure = attribute([sql_string(e.failure) for e in network.events], "''")
    rate = attribute([repr(e.rate_kbps) for e in network.events], "0.0")
    success = attribute([repr(e.success) for e in network.events], "0.0")
    u = [_uniform(seed, tag) for tag in range(5)]
    gaussian = f"sqrt(-2 * log({u[3]})) * cos(2 * pi() * {u[4]})"
    has_rate = f"feature IN [{', '.join(sql_string(f) for f in rated)}]"
    throttled = f"(event > 0 AND {kind} = 'throttled' AND {has_rate})"
    measurements = (
        f"SELECT number AS m, intDiv(number, {len(network.vantages)}) AS round, "  # noqa: S608
        f"{vantages}[number % {len(network.vantages)} + 1] AS vantage, "
        f"floor({float(start)!r} + round * {float(interval)!r}) AS t, "
        f"toString(reinterpretAsUUID(sipHash128({seed}, number))) AS id, "
        f"{sql_string(network.name)} AS network "
        f"FROM numbers({rounds * len(network.vantages)})")
    results = f"""
INSERT INTO results
SELECT network, vantage, feature, t, id, toUInt8(failure IS NULL), failure,
       if(failure IS NULL AND {has_rate}, round(
           if({throttled}, {rate} * (0.92 + 0.12 * {u[2]}), {normal} * exp(0.3 * {gaussian})),
           3), NULL)
FROM (SELECT *, multiIf({throttled}, NULL,
                        event > 0 AND ({kind} = 'blocked' OR {u[0]} >= {success}), {failure},
                        {u[1]} < {stray_failure_rate!r}, 'generic_timeout_error',
                        NULL) AS failure
      FROM (SELECT m, round, vantage, t, id, network, feature, fi, {event} AS event
            FROM ({measurements}) ARRAY JOIN {features} AS feature,
                                             arrayEnumerate({features}) AS fi))"""  # noqa: S608
    stand_in = ("concat('{\"id\":', toJSONString(id), ',\"test_name\":', toJSONString(test_name), "
                "',\"measurement_start_time\":', toJSONString(formatDateTime("
                "toDateTime(toUInt32(t), 'UTC'), '%Y-%m-%d %H:%i:%S')), "
                "',\"probe_network_name\":', toJSONString(network), "
                "',\"annotations\":{\"vantage\":', toJSONString(vantage), "
                "',\"round\":', toJSONString(toString(round)), '}}')")
    stored = f"""
INSERT INTO measurements
SELECT id, t, network, vantage, test_name, round, 'synthetic', m + 1, raw
FROM (SELECT *, {sql_string(TEST_NAME)} AS test_name, {stand_in} AS raw
      FROM ({measurements}))"""  # noqa: S608
    return results, stored
