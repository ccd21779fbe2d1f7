"""Done-when: the real messenger behind the real censor, a scripted timeline on a simulated
clock, probes on a censored and a control path, and the observatory names every event.

Timeline (probe rounds, one simulated hour apart): a clean stretch of 100 rounds, then
media blocked by SNI reset, text blocked by NoiseSocket detection (packets dropped), text
throttled to 128 kbit/s, text flaky at 50%, with clean rounds between them.
"""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from noisewall.censor.middlebox import Middlebox
from noisewall.censor.policy import parse_policy
from noisewall.clock import ManualClock
from noisewall.observatory.config import DetectorConfig
from noisewall.observatory.episodes import Event, analyze
from noisewall.observatory.store import MeasurementStore
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes, Vantage
from noisewall.records.endpoint import Endpoint
from tests.probe.conftest import Messenger

T0 = datetime(2017, 7, 1, tzinfo=UTC).timestamp()
INTERVAL = 3600.0
CLEAN = range(0, 100)
MEDIA_BLOCKED = range(100, 112)
TEXT_BLOCKED = range(124, 136)
TEXT_THROTTLED = range(148, 166)
TEXT_FLAKY = range(178, 208)
ROUNDS = 220


def _at(round_no: int) -> str:
    return datetime.fromtimestamp(T0 + round_no * INTERVAL, UTC).isoformat()


def _window(rounds: range) -> str:
    return f"[{{from: '{_at(rounds.start)}', until: '{_at(rounds.stop)}'}}]"


POLICY = f"""
rules:
  - name: media-sni
    match: {{protocol: tls, sni: localhost}}
    action: reset
    active: {_window(MEDIA_BLOCKED)}
  - name: noisesocket-block
    match: {{protocol: noisesocket}}
    action: drop
    active: {_window(TEXT_BLOCKED)}
  - name: noisesocket-throttle
    match: {{protocol: noisesocket}}
    action: {{kind: throttle, rate_kbps: 128}}
    active: {_window(TEXT_THROTTLED)}
  - name: noisesocket-flaky
    match: {{protocol: noisesocket}}
    action: {{kind: flaky, fail: 0.5}}
    active: {_window(TEXT_FLAKY)}
"""


def _round_of(when: float) -> float:
    return (when - T0) / INTERVAL


def _find(events: list[Event], feature: str, kind: str, rounds: range) -> Event:
    matching = [e for e in events if e.vantage == "direct" and e.feature == feature
                and e.kind == kind and rounds.start - 2 <= _round_of(e.onset) <= rounds.stop]
    assert matching, f"no {kind} {feature} event near rounds {rounds}: {events}"
    return matching[0]


@pytest.mark.slow
@pytest.mark.xdist_group("throughput-b")  # timed throughput: see tests/lab/test_shipped.py
async def test_probes_and_observatory_date_every_scripted_event(
    tmp_path: Path, messenger: Messenger
) -> None:
    clock = ManualClock(T0)
    decisions = io.StringIO()
    policy = parse_policy(POLICY, "timeline.yaml")
    out = tmp_path / "measurements.jsonl"
    async with Middlebox(lambda: policy, clock=clock, rng=random.Random(2017),
                         decision_log=decisions) as censor:
        gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
        settings = ProbeSettings(
            server=messenger.server, media_url=messenger.media_url,
            features=("text", "photo", "tcp"),
            vantages=(Vantage(label="direct", socks5=gateway),
                      Vantage(label="control")),
            connect_timeout=2.0, phase_timeout=1.0, transfer_timeout=5.0,
            samples=SampleSizes(text=8192, photo=16384),
            probe_asn="AS4134", probe_cc="CN", probe_network_name="lab-isp")
        async with Prober(settings, tmp_path / "probe", clock) as prober:
            with out.open("w") as sink:
                for round_no in range(ROUNDS):
                    for measurement in await prober.run_round(round_no):
                        sink.write(json.dumps(measurement) + "\n")
                    clock.advance(INTERVAL)

    with MeasurementStore(tmp_path / "observatory.chdb") as store:
        report = store.ingest_files([out])
        assert not report.errors
        events = analyze(store, DetectorConfig())

    expected = [
        ("photo", "blocked", MEDIA_BLOCKED),
        ("text", "blocked", TEXT_BLOCKED),
        ("text", "throttled", TEXT_THROTTLED),
        ("text", "intermittent", TEXT_FLAKY),
    ]
    found = []
    for feature, kind, rounds in expected:
        event = _find(events, feature, kind, rounds)
        assert abs(_round_of(event.onset) - rounds.start) <= 2, (feature, kind, event)
        found.append(event)
    media, blocked, throttled, flaky = found
    assert media.failure == "connection_reset"
    assert blocked.failure == "generic_timeout_error"
    assert throttled.rate_kbps is not None and 64 <= throttled.rate_kbps <= 160
    assert flaky.success_fraction is not None and 0.2 <= flaky.success_fraction <= 0.8
    # Nothing else: no event on the control path, none in the clean stretch, no extras.
    assert sorted(events, key=lambda e: e.onset) == sorted(found, key=lambda e: e.onset), events
    assert all(_round_of(e.onset) >= CLEAN.stop - 2 for e in events)
    # The censor really acted on the probes' flows (the measurements are not self-made).
    rules = {json.loads(line)["rule"] for line in decisions.getvalue().splitlines()}
    assert {"media-sni", "noisesocket-block", "noisesocket-throttle",
            "noisesocket-flaky"} <= rules
