"""The media probe sends the server name announced with the credentials as SNI, in its TLS
handshake check and in its transfers, through SOCKS5 and directly, and records it (df-006)."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from noisewall.censor.middlebox import Middlebox
from noisewall.censor.policy import Policy, parse_policy
from noisewall.clock import ManualClock
from noisewall.observatory.measurement import parse_measurement
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes, Vantage
from noisewall.records.endpoint import Endpoint
from tests.probe.conftest import MEDIA_NAME, Messenger

START = 1_505_865_600.0  # 2017-09-20 00:00:00 UTC
ALLOW = parse_policy("rules: [{action: allow}]", "allow.yaml")
RESET_BY_NAME = parse_policy(
    f"rules: [{{name: media, match: {{protocol: tls, sni: {MEDIA_NAME}}}, action: reset}}]",
    "reset.yaml")


async def test_the_announced_name_is_sent_and_recorded(
    tmp_path: Path, named_messenger: Messenger
) -> None:
    policy: list[Policy] = [ALLOW]
    log = io.StringIO()
    async with Middlebox(lambda: policy[0], rng=random.Random(1), decision_log=log) as censor:
        gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
        # No media URL override: the probe reaches the announced https://127.0.0.1:PORT.
        settings = ProbeSettings(
            server=named_messenger.server, features=("photo", "voice"),
            vantages=(Vantage(label="direct", socks5=gateway),
                      Vantage(label="control")),
            phase_timeout=1.0, samples=SampleSizes(photo=4096, voice=2048))
        async with Prober(settings, tmp_path / "probe", ManualClock(START)) as prober:
            clean = await prober.run_round(0)
            policy[0] = RESET_BY_NAME
            blocked = await prober.run_round(1)

    for measurement in clean:
        keys = measurement["test_keys"]
        assert keys["status"] == {"ok": ["photo", "voice"], "failed": []}, keys["features"]
        assert [(h["server_name"], h["failure"]) for h in keys["tls_handshakes"]] == [
            (MEDIA_NAME, None)] * 2
        assert {h["address"] for h in keys["tls_handshakes"]} == {
            f"127.0.0.1:{named_messenger.media_port}"}  # the address, not the name
        assert parse_measurement(measurement) is not None
    tls = [json.loads(line) for line in log.getvalue().splitlines()]
    tls = [flow for flow in tls if flow["protocol"] == "tls"]
    # Round 0 through the censor: per feature, the handshake check and the transfers' connection.
    assert len(tls) >= 4 and {flow["sni"] for flow in tls} == {MEDIA_NAME}, tls

    direct, control = blocked
    features = direct["test_keys"]["features"]
    for feature in ("photo", "voice"):
        assert (features[feature]["failure"], features[feature]["failure_phase"]) == (
            "connection_reset", "tls_handshake")
    assert [(h["server_name"], h["failure"]) for h in direct["test_keys"]["tls_handshakes"]] == [
        (MEDIA_NAME, "connection_reset")] * 2
    assert control["test_keys"]["status"]["ok"] == ["photo", "voice"]  # no censor on that path
