"""Detection on generated series with known truth: kind, onset within 2 rounds, no false events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from noisewall.observatory.config import ConfigError, DetectorConfig, load_config
from noisewall.observatory.cusum import Alarm, CusumParams, cusum_episodes
from noisewall.observatory.episodes import Event, analyze
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements

START = 1_500_000_000.0
INTERVAL = 60.0


def _events(store: MeasurementStore, network: SyntheticNetwork, rounds: int, seed: int,
            stray: float = 0.01, config: DetectorConfig | None = None) -> list[Event]:
    report = store.ingest_measurements(synthetic_measurements(
        network, rounds=rounds, start=START, interval=INTERVAL, seed=seed,
        stray_failure_rate=stray))
    assert not report.errors
    return analyze(store, config)


def _round(when: float | None) -> float:
    """The probe round of an event's onset or end (an end of None -- still on -- fails)."""
    assert when is not None, "the event has not ended"
    return (when - START) / INTERVAL


def _only(events: list[Event], feature: str, vantage: str = "direct") -> list[Event]:
    return [e for e in events if e.feature == feature and e.vantage == vantage]


@pytest.mark.parametrize("seed", range(4))
def test_media_blocked_by_sni_reset(store: MeasurementStore, seed: int) -> None:
    network = SyntheticNetwork("Net", "AS64500", features=("photo", "video", "text"), events=(
        Injected("blocked", "photo", 150, failure="connection_reset"),
        Injected("blocked", "video", 150, failure="connection_reset")))
    events = _events(store, network, 260, seed)
    for feature in ("photo", "video"):
        (event,) = _only(events, feature)
        assert event.kind == "blocked" and event.failure == "connection_reset"
        assert abs(_round(event.onset) - 150) <= 2 and event.end is None
        assert event.rounds == 260 - _round(event.onset) and event.confidence > 0.9
    assert _only(events, "text") == []


@pytest.mark.parametrize("seed", range(4))
def test_text_blocked_then_restored(store: MeasurementStore, seed: int) -> None:
    network = SyntheticNetwork("Net", "AS64500", features=("text", "photo"), events=(
        Injected("blocked", "text", 120, 200, failure="connection_reset"),))
    (event,) = _events(store, network, 320, seed)
    assert (event.feature, event.kind, event.failure) == ("text", "blocked", "connection_reset")
    assert abs(_round(event.onset) - 120) <= 2 and abs(_round(event.end) - 200) <= 2


@pytest.mark.parametrize("seed", range(4))
def test_text_throttled_to_128_kbps_against_the_control_path(store: MeasurementStore,
                                                             seed: int) -> None:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"), ("text", "photo"),
                               events=(Injected("throttled", "text", 110, 190, rate_kbps=128),))
    (event,) = _events(store, network, 300, seed)
    assert (event.feature, event.vantage, event.kind) == ("text", "direct", "throttled")
    assert event.rate_kbps == pytest.approx(128, rel=0.1)
    assert abs(_round(event.onset) - 110) <= 2 and abs(_round(event.end) - 190) <= 2
    assert event.confidence > 0.9


def test_throttling_from_the_first_round_is_seen_against_the_control(store: MeasurementStore
                                                                     ) -> None:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"), ("text",),
                               events=(Injected("throttled", "text", 0, rate_kbps=128),))
    (event,) = _events(store, network, 60, 1)
    assert event.kind == "throttled" and _round(event.onset) == 0


def test_a_slowdown_the_control_path_shares_is_congestion(store: MeasurementStore) -> None:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"), ("photo",), events=(
        Injected("throttled", "photo", 100, 160, rate_kbps=500),
        Injected("throttled", "photo", 100, 160, rate_kbps=520, vantage="control")))
    events = _events(store, network, 220, 3)
    assert _only(events, "photo", "direct") == []
    # The control path is the reference: its own slowdown is congestion, not an event.
    assert _only(events, "photo", "control") == []


def test_the_control_path_still_reports_its_failures(store: MeasurementStore) -> None:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"), ("photo",), events=(
        Injected("blocked", "photo", 100, 160, failure="connection_reset", vantage="control"),))
    events = _events(store, network, 220, 3)
    assert [(e.kind, _round(e.onset)) for e in _only(events, "photo", "control")] == [
        ("blocked", 100)]


@pytest.mark.parametrize("seed", range(4))
def test_text_flaky_at_50_percent(store: MeasurementStore, seed: int) -> None:
    network = SyntheticNetwork("Net", "AS64500", features=("text",), events=(
        Injected("intermittent", "text", 100, 220, failure="eof_error", success=0.5),))
    (event,) = _events(store, network, 320, seed)
    assert event.kind == "intermittent" and event.failure == "eof_error"
    assert event.success_fraction is not None and 0.3 <= event.success_fraction <= 0.7
    rows = store.rows(next(k for k in store.series() if k.feature == "text"))
    onset, end = int(_round(event.onset)), int(_round(event.end))
    # Dated on failed rounds; within 2 rounds of the truth unless the censor's coin came up
    # "pass" several times in a row (the next test counts how often that happens).
    assert not rows.ok[onset] and 100 <= onset <= 110
    assert not rows.ok[end - 1] and 210 <= end <= 222


def test_flaky_onsets_are_within_two_rounds_seven_times_in_eight(tmp_path: Path) -> None:
    hits = whole = 0
    for seed in range(24):
        with MeasurementStore(tmp_path / f"{seed}.db") as store:
            network = SyntheticNetwork("Net", "AS64500", features=("text",), events=(
                Injected("intermittent", "text", 100, 200, success=0.5),))
            events = _events(store, network, 260, seed)
            assert {e.kind for e in events} == {"intermittent"}
            hits += abs(_round(events[0].onset) - 100) <= 2
            whole += len(events) == 1
    assert hits >= 18  # expected 21 of 24
    assert whole >= 22  # a streak of ~15 passes at 50% may end the event early (seen: 1 of 24)


@pytest.mark.parametrize("seed", range(30))
def test_no_event_over_clean_rounds(store: MeasurementStore, seed: int) -> None:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"))
    assert _events(store, network, 150, seed, stray=0.01) == []


def test_flaky_then_blocked_is_two_events(store: MeasurementStore) -> None:
    network = SyntheticNetwork("Net", "AS64500", features=("text",), events=(
        Injected("intermittent", "text", 100, 180, success=0.5, failure="eof_error"),
        Injected("blocked", "text", 180, 260, failure="connection_reset")))
    flaky, blocked = _events(store, network, 300, 5)
    assert (flaky.kind, blocked.kind) == ("intermittent", "blocked")
    assert abs(_round(blocked.onset) - 180) <= 2 and abs(_round(blocked.end) - 260) <= 2
    assert flaky.end == blocked.onset and blocked.failure == "connection_reset"


def test_cusum_alarm_after_the_expected_delay() -> None:
    params = CusumParams(0.0, 0.7, threshold=1.75, end_threshold=3.6, gap=1e9,
                         half_life=1.0)
    xs = [0.0] * 10 + [1.0] * 20 + [0.0] * 20
    (episode,) = cusum_episodes(np.asarray(xs), np.arange(len(xs), dtype=float), params)
    assert episode.onset == Alarm(start=10, alarm=12)  # 3 * 0.65 > 1.75
    assert episode.end == Alarm(start=30, alarm=40)  # 11 * 0.35 > 3.6


def test_cusum_sums_decay_over_a_gap() -> None:
    params = CusumParams(0.0, 0.7, threshold=1.75, end_threshold=3.5, gap=24.0, half_life=48.0)
    xs = np.ones(3)
    assert len(cusum_episodes(xs, np.array([0.0, 1.0, 2.0]), params)) == 1
    assert cusum_episodes(xs, np.array([0.0, 1.0, 500.0]), params) == []


def test_config_file(tmp_path: Path) -> None:
    assert load_config(None) == DetectorConfig()
    path = tmp_path / "detector.yaml"
    path.write_text("cusum:\n  edd_rounds: 10\nthrottle:\n  drop_factor: 8\n")
    config = load_config(path)
    assert config.cusum.threshold == pytest.approx(3.5) and config.throttle.drop_factor == 8
    path.write_text("")
    assert load_config(path) == DetectorConfig()


@pytest.mark.parametrize(("text", "expected"), [
    ("cusum:\n  edd_rounds: 4\n  mu1: 1.5\n", "detector.yaml:3: cusum.mu1: must be at most 1"),
    ("# tuned\ncusum:\n  edd: 3\n",
     "detector.yaml:3: cusum.edd: unknown key (expected one of: mu0, mu1, edd_rounds, "),
    ("cusum: [\n", "detector.yaml:2: invalid YAML"),
    ("cusum:\n  mu0: 0.5\n  mu1: 0.4\n", "detector.yaml:1: cusum: mu1 must be above mu0"),
    ("classify: {}\nthrottle:\n  control_vantage: ''\n",
     "detector.yaml:3: throttle.control_vantage: must not be empty"),
    ("throttle: 5\n", "detector.yaml:1: throttle: must be a mapping"),
    ("- 1\n", "detector.yaml:1: a detector configuration is a mapping"),
])
def test_config_errors_name_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "detector.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(tmp_path / expected)), str(caught.value)


def test_event_json() -> None:
    event = Event("Net", "direct", "text", "throttled", 1_505_865_600.0, None, None, 128.0, None,
                  0.97, 12)
    data = event.as_json()
    assert data["onset_utc"] == "2017-09-20 00:00:00" and data["end_utc"] is None
    assert data["kind"] == "throttled" and data["rate_kbps"] == 128.0


@pytest.mark.parametrize("seed", range(3))
def test_a_throttle_followed_by_a_block_is_two_events_one_after_the_other(
        store: MeasurementStore, seed: int) -> None:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"), features=("photo",),
                               events=(Injected("throttled", "photo", 80, 160, rate_kbps=64),
                                       Injected("blocked", "photo", 160, 240)))
    events = _only(_events(store, network, rounds=320, seed=seed), "photo")
    assert [e.kind for e in events] == ["throttled", "blocked"]
    throttled, blocked = events
    assert abs(_round(throttled.onset) - 80) <= 2 and abs(_round(blocked.onset) - 160) <= 2
    assert throttled.end == blocked.onset  # not at 240, when throughput is seen again
    assert abs(_round(blocked.end) - 240) <= 2
    assert throttled.rounds == round(_round(throttled.end) - _round(throttled.onset))
