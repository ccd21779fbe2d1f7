"""The keyword probe against a WeChat-mode server whose lists change, and ``filtered`` events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from noisewall.clock import ManualClock
from noisewall.messenger.server import ChatServer
from noisewall.observatory.filtered import episodes, filtered_events
from noisewall.probe.keyword import (
    ImageCandidate,
    KeywordCandidate,
    KeywordProber,
    KeywordSettings,
)
from noisewall.records.endpoint import Endpoint
from tests.messenger.wechat_helpers import drawing, encoded, wechat_server

DAY = 86_400.0
START = datetime(2017, 10, 1, tzinfo=UTC).timestamp()
LISTS = """\
keywords:
  - id: lawyer
    terms: [Wang Quanzhang, human rights lawyer]
    active: {from: 2017-10-03}
  - id: congress
    terms: [party congress, delegates]
    scopes: [group]
    active: {from: 2017-10-02, until: 2017-10-06}
images:
  - {id: banner, phash: PHASH, active: {from: 2017-10-04}}
"""
ROUNDS = 8


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
async def server(tmp_path: Path, clock: ManualClock) -> AsyncIterator[ChatServer]:
    async with wechat_server(tmp_path / "server", LISTS, clock) as chat:
        yield chat


async def test_keyword_rounds_find_each_list_change(server: ChatServer, clock: ManualClock,
                                                    tmp_path: Path) -> None:
    (tmp_path / "banner.png").write_bytes(encoded(drawing(1)))
    congress = "the party congress delegates arrive"
    settings = KeywordSettings(
        server=Endpoint("127.0.0.1", server.address.port), wait=0.5, probe_network_name="lab",
        candidates=(
            KeywordCandidate(id="lawyer", text="Wang Quanzhang is a human rights lawyer"),
            KeywordCandidate(id="lawyer-name", text="Wang Quanzhang"),
            KeywordCandidate(id="congress", text=congress),
            KeywordCandidate(id="congress-group", text=congress, scope="group"),
        ),
        images=(ImageCandidate(id="banner", file=tmp_path / "banner.png", scope="group"),))
    measurements = []
    async with KeywordProber(settings, tmp_path / "probe", clock) as prober:
        for n in range(ROUNDS):
            measurements.extend(await prober.run_round(n))
            clock.advance(DAY)
    assert len(measurements) == 2 * ROUNDS
    first = measurements[0]
    assert first["test_name"] == "noisewall_keyword_filtering"
    assert first["annotations"]["vantage"] == "mainland"
    assert first["test_keys"]["control"] == {"one_to_one": True, "group": True}
    json.dumps(measurements)  # OONI records are JSON

    found = {(e.vantage, e.feature): (e.onset, e.end) for e in filtered_events(measurements)}
    assert found == {
        ("mainland", "keyword:lawyer"): (START + 2 * DAY, None),
        ("mainland", "keyword:congress-group"): (START + 1 * DAY, START + 5 * DAY),
        ("mainland", "image:banner"): (START + 3 * DAY, None),
    }
    assert all(e.kind == "filtered" for e in filtered_events(measurements))


def test_rounds_without_the_control_say_nothing() -> None:
    rounds: list[tuple[float, bool | None]] = [(0, False), (1, True), (2, None), (3, True),
                                               (4, False), (5, True), (6, False)]
    assert episodes(rounds) == [(1, 4, 2)]  # the unknown round neither breaks nor counts
    assert episodes([(0, True), (1, False)]) == []  # one lost message is not a list


def test_malformed_keyword_measurements_are_refused() -> None:
    with pytest.raises(ValueError, match="keyword measurement"):
        filtered_events([{"test_name": "noisewall_keyword_filtering", "id": "x",
                          "test_keys": {"region": "mainland"},
                          "measurement_start_time": "2017-10-01 00:00:00"}])
