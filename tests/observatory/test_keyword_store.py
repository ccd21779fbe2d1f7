"""Keyword measurements through ``noisewall observe``: stored, checked, ``filtered`` events out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from noisewall.clock import ManualClock
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements
from noisewall.probe.keyword import (
    ImageCandidate,
    KeywordCandidate,
    KeywordProber,
    KeywordSettings,
)
from noisewall.records.endpoint import Endpoint
from tests.messenger.wechat_helpers import drawing, encoded, wechat_server
from tests.observatory.test_ingest_sql import Mutation, _verdict, mutated_lines
from tests.probe.test_probe_cli import _noisewall

DAY = 86_400.0
START = datetime(2017, 10, 1, tzinfo=UTC).timestamp()
NETWORK = "China Telecom (lab)"
LISTS = """\
keywords:
  - id: lawyer
    terms: [Wang Quanzhang, human rights lawyer]
    active: {from: 2017-10-03}
images:
  - {id: banner, phash: PHASH, scopes: [group], active: {from: 2017-10-02, until: 2017-10-05}}
"""
ROUNDS = 7


async def _keyword_measurements(folder: Path) -> list[dict[str, Any]]:
    """Real keyword rounds against a WeChat-mode server whose lists change, one a day."""
    clock = ManualClock(START)
    (folder / "banner.png").write_bytes(encoded(drawing(1)))
    settings = KeywordSettings(
        server=Endpoint("127.0.0.1", 0), wait=0.4, probe_network_name=NETWORK,
        candidates=(KeywordCandidate(id="lawyer", text="Wang Quanzhang, human rights lawyer"),
                    KeywordCandidate(id="name", text="Wang Quanzhang")),
        images=(ImageCandidate(id="banner", file=folder / "banner.png", scope="group"),))
    measurements = []
    async with wechat_server(folder / "server", LISTS, clock) as server:
        settings = settings.model_copy(update={"server": server.address})
        async with KeywordProber(settings, folder / "probe", clock) as prober:
            for n in range(ROUNDS):
                measurements.extend(await prober.run_round(n))
                clock.advance(DAY)
    return measurements


def _network_measurements() -> Iterator[dict[str, Any]]:
    """The E2E messenger's text, hourly, blocked from the fourth day (the network's kind)."""
    network = SyntheticNetwork(NETWORK, "AS4134", features=("text",),
                               events=(Injected("blocked", "text", 3 * 24),))
    return synthetic_measurements(network, rounds=ROUNDS * 24, start=START, interval=DAY / 24,
                                  seed=3, stray_failure_rate=0)


async def test_observe_stores_keyword_measurements_and_reports_filtered_events(
        tmp_path: Path) -> None:
    keyword = await _keyword_measurements(tmp_path)
    files = tmp_path / "in"
    files.mkdir()
    (files / "keyword.jsonl").write_text("".join(json.dumps(m) + "\n" for m in keyword))
    (files / "probe.jsonl").write_text(
        "".join(json.dumps(m) + "\n" for m in _network_measurements()))
    db = str(tmp_path / "obs.chdb")

    code, stdout, stderr = await _noisewall("observe", "ingest", str(files), "--db", db)
    assert code == 0, stderr
    assert stdout.startswith(f"{2 * ROUNDS + 24 * ROUNDS} stored, 0 already stored, 0 rejected")
    assert "not analysed" not in stderr

    code, stdout, stderr = await _noisewall("observe", "analyze", "--db", db, "--json")
    assert code == 0, stderr
    found = {(e["vantage"], e["feature"], e["kind"]): (e["onset"], e["end"])
             for e in json.loads(stdout)}
    assert found == {
        ("direct", "text", "blocked"): (START + 3 * DAY, None),
        ("mainland", "keyword:lawyer", "filtered"): (START + 2 * DAY, None),
        ("mainland", "image:banner", "filtered"): (START + 1 * DAY, START + 4 * DAY),
    }

    html = tmp_path / "report.html"
    code, stdout, stderr = await _noisewall("observe", "report", "--db", db, "--html", str(html))
    assert code == 0, stderr
    assert "3 events" in stdout and stdout.count("filtered") == 2, stdout
    assert "server dropped it silently" in stdout
    page = html.read_text()
    assert "keyword:lawyer" in page and "image:banner" in page and "filtered" in page

    # --since: only the rounds from then on (the image episode has ended before)
    code, stdout, _ = await _noisewall("observe", "analyze", "--db", db, "--json",
                                       "--since", "2017-10-05")
    assert {(e["feature"], e["onset"]) for e in json.loads(stdout)
            if e["kind"] == "filtered"} == {("keyword:lawyer", START + 4 * DAY)}


def _outcome(m: dict[str, Any]) -> dict[str, Any]:
    outcome: dict[str, Any] = m["test_keys"]["combinations"]["lawyer"]
    return outcome


KEYWORD_MUTATIONS: list[Mutation] = [
    lambda m: None,
    lambda m: m["test_keys"].update(region=7),
    lambda m: m["test_keys"].pop("region"),
    lambda m: m["test_keys"].pop("failure"),
    lambda m: m["test_keys"].update(failure="generic_timeout_error"),
    lambda m: m["test_keys"].update(failure=False),
    lambda m: m["test_keys"].update(control=[]),
    lambda m: m["test_keys"].update(control={"one_to_one": "yes"}),
    lambda m: m["test_keys"].update(control={"broadcast": True}),
    lambda m: m["test_keys"].update(control={}),
    lambda m: m["test_keys"].pop("control"),
    lambda m: m["test_keys"].pop("combinations"),
    lambda m: m["test_keys"].update(combinations=[]),
    lambda m: m["test_keys"]["combinations"].update(x=True),
    lambda m: _outcome(m).update(arrived=None),
    lambda m: _outcome(m).update(arrived=1),
    lambda m: _outcome(m).pop("arrived"),
    lambda m: _outcome(m).update(scope="broadcast"),
    lambda m: _outcome(m).update(note="extra keys are kept"),
    lambda m: m["test_keys"].update(images={"b": {"scope": "group", "arrived": False}}),
    lambda m: m["test_keys"].update(images={"b": {"scope": "group"}}),
    lambda m: m.update(id=None),
]


def test_engine_and_parser_agree_on_keyword_lines(store: MeasurementStore) -> None:
    base = {
        "id": "x", "test_name": "noisewall_keyword_filtering", "probe_asn": "AS4134",
        "probe_cc": "CN", "probe_network_name": NETWORK, "annotations": {"vantage": "mainland"},
        "measurement_start_time": "2017-10-01 00:00:00",
        "test_keys": {"region": "mainland", "failure": None,
                      "control": {"one_to_one": True},
                      "combinations": {"lawyer": {"scope": "one_to_one", "arrived": False}}}}
    lines = mutated_lines(base, KEYWORD_MUTATIONS)
    expected = {n: _verdict(line) for n, line in enumerate(lines, 1)}
    assert sorted(set(expected.values())) == ["error", "ok"]
    report = store.ingest_lines(lines)
    assert {e.line for e in report.errors} == {n for n, v in expected.items() if v == "error"}
    assert not any(e.message.startswith("refused by the engine") for e in report.errors)
    assert report.stored == sum(v == "ok" for v in expected.values())
    assert store.series() == []  # keyword measurements give no network result rows

