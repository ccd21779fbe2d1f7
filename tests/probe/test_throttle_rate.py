"""A policer's rate as the text probe reads it: the bucket's burst does not ride along."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from noisewall.censor.middlebox import Middlebox
from noisewall.censor.policy import parse_policy
from noisewall.clock import ManualClock
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes, Vantage
from noisewall.records.endpoint import Endpoint
from tests.probe.conftest import Messenger

POLICY = """
rules:
  - name: text-throttled
    match: {protocol: noisesocket}
    action: {kind: throttle, rate_kbps: 32}
"""


@pytest.mark.xdist_group("throughput-b")  # timed throughput: see tests/lab/test_shipped.py
async def test_a_4_kib_text_through_a_32_kbit_policer_reads_within_15_percent(
        tmp_path: Path, messenger: Messenger) -> None:
    """Issue 13: one 4 KiB message read 41.6 kbit/s (+30 %), its first 1,500 B free."""
    clock = ManualClock(1_500_000_000.0)
    policy = parse_policy(POLICY, "throttle.yaml")
    async with Middlebox(lambda: policy, clock=clock, rng=random.Random(1)) as censor:
        gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
        settings = ProbeSettings(
            server=messenger.server, media_url=messenger.media_url, features=("text",),
            vantages=(Vantage(label="direct", socks5=gateway),),
            connect_timeout=2.0, phase_timeout=2.0, transfer_timeout=5.0,
            samples=SampleSizes(text=4096), probe_asn="AS64500", probe_cc="CN",
            probe_network_name="lab-isp")
        async with Prober(settings, tmp_path / "probe", clock) as prober:
            rates = []
            for round_no in range(3):
                (measurement,) = await prober.run_round(round_no)
                text = measurement["test_keys"]["features"]["text"]
                assert text["status"] == "ok", text
                rates.append(text["throughput_kbps"])
    assert all(32 * 0.85 <= rate <= 32 * 1.15 for rate in rates), rates
