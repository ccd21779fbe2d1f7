"""The probes against a real messenger on loopback: the measurement format, and failures
named with their phase when a real censor resets, drops or refuses."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import ssl
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from noisewall.censor.middlebox import Middlebox
from noisewall.censor.policy import parse_policy
from noisewall.clock import ManualClock
from noisewall.observatory.measurement import parse_measurement
from noisewall.probe import phases
from noisewall.probe.media import pinned_client_context
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes, Vantage
from noisewall.records.endpoint import Endpoint
from noisewall.records.measurement import ooni_time
from noisewall.records.names import FEATURES
from tests.probe.conftest import Messenger

START = 1_505_865_600.0  # 2017-09-20 00:00:00 UTC
SMALL = SampleSizes(text=1024, photo=4096, video=4096, voice=4096)

BASE_KEYS = {"id", "annotations", "data_format_version", "extensions", "input",
             "measurement_start_time", "probe_asn", "probe_cc", "probe_ip",
             "probe_network_name", "report_id", "software_name", "software_version",
             "test_keys", "test_name", "test_runtime", "test_start_time", "test_version"}
RESULT_KEYS = {"status", "failure", "failure_phase", "t_connect", "t_handshake",
               "t_round_trip", "bytes", "throughput_kbps", "runtime"}


async def test_a_clean_round_measures_every_feature_in_the_agreed_format(
    tmp_path: Path, messenger: Messenger
) -> None:
    clock = ManualClock(START)
    settings = ProbeSettings(server=messenger.server, media_url=messenger.media_url,
                             vantages=(Vantage(label="direct"), Vantage(label="control")),
                             samples=SMALL, probe_asn="AS4134", probe_cc="CN")
    async with Prober(settings, tmp_path / "probe", clock) as prober:
        first = await prober.run_round(0)
        clock.advance(3600)
        second = await prober.run_round(1)
    measurements = first + second
    assert [m["annotations"]["vantage"] for m in measurements] == ["direct", "control"] * 2
    assert len({m["id"] for m in measurements}) == 4
    for m in measurements:
        json.dumps(m)  # plain JSON
        assert set(m) == BASE_KEYS
        assert uuid.UUID(m["id"]).version == 4
        assert m["test_name"] == "noisewall_messaging" and m["software_name"] == "noisewall"
        assert m["input"] is None and m["test_start_time"] == ooni_time(START)
        assert all(isinstance(v, str) for v in m["annotations"].values())
        keys = m["test_keys"]
        assert set(keys["features"]) == set(FEATURES)
        assert keys["status"] == {"ok": list(FEATURES), "failed": []}, keys["features"]
        for name, result in keys["features"].items():
            assert set(result) == RESULT_KEYS
            assert result["failure"] is None and result["failure_phase"] is None
            assert (result["throughput_kbps"] is not None) == (
                name in ("text", "photo", "video", "voice")), name
        assert keys["features"]["photo"]["bytes"] > 2 * SMALL.photo  # both ways, encrypted
        assert keys["features"]["text"]["t_handshake"] > 0
        assert keys["noise_handshakes"] and all(h["failure"] is None
                                               for h in keys["noise_handshakes"])
        assert {h["server_name"] for h in keys["tls_handshakes"]} == {"localhost"}
        assert {(r["request"]["method"], r["response"]["code"]) for r in keys["requests"]} == {
            ("POST", 201), ("GET", 200)}
        assert all(c["status"]["success"] for c in keys["tcp_connect"])
        parsed = parse_measurement(m)  # the observatory reads it as it is
        assert parsed is not None
    assert [m["measurement_start_time"] for m in measurements] == [
        ooni_time(START)] * 2 + [ooni_time(START + 3600)] * 2
    assert [m["annotations"]["round"] for m in measurements] == ["0", "0", "1", "1"]


POLICY = """
rules:
  - {name: chat, match: {protocol: noisesocket}, action: reset}
  - {name: media, match: {protocol: tls, sni: localhost}, action: drop}
"""


async def test_failures_are_named_with_their_phase_behind_a_real_censor(
    tmp_path: Path, messenger: Messenger
) -> None:
    policy = parse_policy(POLICY, "censor.yaml")
    closed = _closed_port()
    async with Middlebox(lambda: policy, rng=random.Random(1)) as censor:
        gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
        settings = ProbeSettings(
            server=messenger.server, media_url=messenger.media_url,
            features=("text", "photo", "register", "tcp"),
            vantages=(Vantage(label="direct", socks5=gateway),),
            tcp_endpoints=(messenger.server, Endpoint("127.0.0.1", closed)),
            phase_timeout=0.5, samples=SMALL)
        async with Prober(settings, tmp_path / "probe", ManualClock(START)) as prober:
            (measurement,) = await prober.run_round(0)
    features = measurement["test_keys"]["features"]
    assert (features["text"]["failure"], features["text"]["failure_phase"]) == (
        "connection_reset", "noise_handshake")
    assert (features["register"]["failure"], features["register"]["failure_phase"]) == (
        "connection_reset", "noise_handshake")
    assert features["text"]["t_connect"] is not None  # TCP got through; Noise did not
    assert (features["photo"]["failure"], features["photo"]["failure_phase"]) == (
        "generic_timeout_error", "tls_handshake")
    # Through SOCKS5 a closed port is the gateway's refusal.
    assert (features["tcp"]["failure"], features["tcp"]["failure_phase"]) == (
        "connection_refused", "socks5")
    keys = measurement["test_keys"]
    assert keys["status"] == {"ok": [], "failed": ["text", "photo", "register", "tcp"]}
    assert {h["failure"] for h in keys["noise_handshakes"]} == {"connection_reset"}
    assert [h["failure"] for h in keys["tls_handshakes"]] == ["generic_timeout_error"]
    assert [c["status"]["success"] for c in keys["tcp_connect"]
            if "tcp" in c["tags"]] == [True, False]


async def test_a_reset_tls_handshake_ends_the_media_probe_at_once(
    tmp_path: Path, messenger: Messenger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failed start_tls leaves the stream with asyncio's TLS protocol, so its wait_closed
    # never returns: a probe that waited for it spent the whole close wait on every block.
    monkeypatch.setattr(phases, "CLOSE_WAIT_S", 3600.0)
    policy = parse_policy("rules: [{match: {protocol: tls}, action: reset}]", "censor.yaml")
    async with Middlebox(lambda: policy, rng=random.Random(1)) as censor:
        gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
        settings = ProbeSettings(
            server=messenger.server, media_url=messenger.media_url, features=("photo",),
            vantages=(Vantage(label="direct", socks5=gateway),),
            samples=SMALL)
        async with Prober(settings, tmp_path / "probe", ManualClock(START)) as prober:
            async with asyncio.timeout(60):
                (measurement,) = await prober.run_round(0)
    photo = measurement["test_keys"]["features"]["photo"]
    assert (photo["failure"], photo["failure_phase"]) == ("connection_reset", "tls_handshake")


async def test_a_server_that_is_down_is_connection_refused(tmp_path: Path,
                                                           messenger: Messenger) -> None:
    settings = ProbeSettings(server=messenger.server, media_url=messenger.media_url,
                             features=("text",), samples=SMALL)
    async with Prober(settings, tmp_path / "probe", ManualClock(START)) as prober:
        await messenger.chat.close()
        (measurement,) = await prober.run_round(0)
    text = measurement["test_keys"]["features"]["text"]
    assert (text["status"], text["failure"], text["failure_phase"]) == (
        "failed", "connection_refused", "tcp_connect")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("bad", [
    {"features": ()},
    {"features": ("text", "sms")},
    {"vantages": (Vantage(label="a"), Vantage(label="a"))},
    {"vantages": ()},
    {"phase_timeout": 0},
    {"media_url": "http://plain"},
    {"probe_asn": "4134"},
    {"extra": 1},
])
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ProbeSettings.model_validate({"server": ("127.0.0.1", 5222), **bad})


def test_vantage_labels_are_checked() -> None:
    with pytest.raises(ValidationError):
        Vantage(label="no spaces")
    assert ProbeSettings(server=Endpoint("h", 1), features=("text", "text")).features == ("text",)


def test_the_media_handshake_context_is_made_once_and_skips_the_ca_store() -> None:
    # The media certificate is pinned by fingerprint; a CA store would cost
    # ~50 ms of CPU per handshake and check nothing.
    context = pinned_client_context()
    assert context is pinned_client_context()
    assert context.cert_store_stats()["x509_ca"] == 0
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
