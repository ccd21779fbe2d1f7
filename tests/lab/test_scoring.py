"""Scoring detected events against ground truth, on synthetic events; the schedule."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from noisewall.clock import ManualClock
from noisewall.lab.groundtruth import TruthEvent
from noisewall.lab.schedule import Schedule
from noisewall.lab.scoring import one_state_at_a_time, score

HOUR = 3600.0
SCHEDULE = Schedule(start=0.0, end=100 * 12 * HOUR, interval=12 * HOUR)


@dataclass(frozen=True)
class Seen:
    vantage: str
    feature: str
    kind: str
    onset: float
    end: float | None = None
    network: str = "lab net"


def truth(feature: str, kind: str, onset_round: float, end_round: float | None = None,
          vantage: str = "direct") -> TruthEvent:
    end = None if end_round is None else end_round * 12 * HOUR
    return TruthEvent(vantage, feature, kind, onset_round * 12 * HOUR, end, "rule", "record")


def seen(feature: str, kind: str, onset_round: int, end_round: int | None = None,
         vantage: str = "direct") -> Seen:
    end = None if end_round is None else end_round * 12 * HOUR
    return Seen(vantage, feature, kind, onset_round * 12 * HOUR, end)


def test_schedule_rounds_and_clock() -> None:
    schedule = Schedule(start=100.0, end=130.0, interval=10.0)
    assert len(schedule) == 3
    clock = ManualClock()
    times = []
    for r in schedule.run(clock):
        assert clock.now() == r.time
        times.append(r.time)
    assert times == [100.0, 110.0, 120.0]
    assert schedule.first_round_at_or_after(100.0) == 0
    assert schedule.first_round_at_or_after(100.5) == 1
    assert schedule.first_round_at_or_after(110.0) == 1
    assert schedule.first_round_at_or_after(500.0) == 3
    assert len(Schedule(0.0, 31.0, 10.0)) == 4
    with pytest.raises(ValueError):
        Schedule(0.0, 0.0, 1.0)


def test_perfect_detection_passes() -> None:
    gt = [truth("photo", "blocked", 10), truth("text", "intermittent", 50, 60),
          truth("text", "throttled", 60, 70), truth("text", "blocked", 70)]
    detected = [seen("photo", "blocked", 10), seen("text", "intermittent", 51, 60),
                seen("text", "throttled", 60, 72), seen("text", "blocked", 72)]
    result = score(gt, detected, SCHEDULE)
    assert result.passed
    assert [p.onset_error_rounds for p in result.pairs] == [0.0, 1.0, 0.0, 2.0]
    assert [p.end_error_rounds for p in result.pairs] == [None, 0.0, 2.0, None]
    assert result.as_json()["detected_ok"] == 4


def test_a_throttle_followed_by_a_block_ends_where_the_block_begins() -> None:
    # Both rules stay on to the end of the span: the throttle's true end is the block's onset.
    gt = [truth("text", "throttled", 60), truth("text", "blocked", 70)]
    right = score(gt, [seen("text", "throttled", 60, 70), seen("text", "blocked", 70)],
                  SCHEDULE)
    assert right.passed
    assert [(p.truth.kind, p.truth.end) for p in right.pairs] == [
        ("throttled", 70 * 12 * HOUR), ("blocked", None)]
    late = score(gt, [seen("text", "throttled", 60, 73), seen("text", "blocked", 70)], SCHEDULE)
    assert not late.passed and late.as_json()["wrong_end"] == 1
    assert late.pairs[0].end_error_rounds == 3.0 and late.rows()[0][-1] == "WRONG END"
    through = score(gt, [seen("text", "throttled", 60), seen("text", "blocked", 70)], SCHEDULE)
    assert not through.passed and not through.pairs[0].end_ok
    assert through.rows()[0][-2:] == ("open, should end", "WRONG END")


def test_ends_within_the_tolerance_pass_and_open_events_match_open_truth() -> None:
    gt = [truth("photo", "blocked", 10, 40)]
    for end, passed in ((38, True), (42, True), (43, False), (37, False), (None, False)):
        result = score(gt, [seen("photo", "blocked", 10, end)], SCHEDULE)
        assert result.passed == passed, end
    near_the_end = [truth("photo", "blocked", 10, 99)]  # recovery one round before the span ends
    assert score(near_the_end, [seen("photo", "blocked", 10)], SCHEDULE).passed
    still_on = [truth("photo", "blocked", 10)]
    assert score(still_on, [seen("photo", "blocked", 10)], SCHEDULE).passed
    assert not score(still_on, [seen("photo", "blocked", 10, 50)], SCHEDULE).passed
    assert score(still_on, [seen("photo", "blocked", 10, 99)], SCHEDULE).passed


def test_onset_between_rounds_is_measured_from_the_next_round() -> None:
    # the censor starts at round 9.5; the first round that can see it is round 10
    result = score([truth("photo", "blocked", 9.5)], [seen("photo", "blocked", 10)], SCHEDULE)
    assert result.pairs[0].onset_error_rounds == 0.0 and result.passed


def test_late_wrong_kind_missed_and_false_alarm_each_fail() -> None:
    gt = [truth("photo", "blocked", 10)]
    late = score(gt, [seen("photo", "blocked", 13)], SCHEDULE)
    assert not late.passed and late.pairs[0].onset_error_rounds == 3.0 and not late.pairs[0].on_time
    wrong = score(gt, [seen("photo", "throttled", 10)], SCHEDULE)
    assert not wrong.passed and not wrong.pairs[0].kind_ok
    assert wrong.as_json()["kind_mismatches"] == 1
    missed = score(gt, [], SCHEDULE)
    assert not missed.passed and missed.missed == 1 and missed.pairs[0].missed
    alarm = score(gt, [seen("photo", "blocked", 10), seen("text", "blocked", 30)], SCHEDULE)
    assert not alarm.passed and alarm.pairs[0].passed
    assert [e.feature for e in alarm.false_alarms] == ["text"]


def test_other_vantage_or_feature_never_pairs() -> None:
    gt = [truth("photo", "blocked", 10)]
    result = score(gt, [seen("photo", "blocked", 10, vantage="control"),
                        seen("video", "blocked", 10)], SCHEDULE)
    assert result.missed == 1 and len(result.false_alarms) == 2


def test_detection_long_before_onset_or_after_end_is_a_false_alarm() -> None:
    gt = [truth("text", "intermittent", 50, 60)]
    result = score(gt, [seen("text", "intermittent", 40, 45),
                        seen("text", "intermittent", 61, 70)],
                   SCHEDULE)
    assert result.missed == 1 and len(result.false_alarms) == 2


def test_a_split_detection_leaves_a_false_alarm() -> None:
    gt = [truth("text", "blocked", 70)]
    result = score(gt, [seen("text", "blocked", 70), seen("text", "blocked", 80)], SCHEDULE)
    assert result.pairs[0].passed and len(result.false_alarms) == 1 and not result.passed


@given(st.lists(st.tuples(st.sampled_from(["text", "photo"]),
                          st.sampled_from(["blocked", "throttled", "intermittent"]),
                          st.integers(0, 99)), max_size=8),
       st.lists(st.tuples(st.sampled_from(["text", "photo"]),
                          st.sampled_from(["blocked", "throttled", "intermittent"]),
                          st.integers(0, 99)), max_size=8))
def test_every_detection_is_paired_once_or_a_false_alarm(
    gt_spec: list[tuple[str, str, int]], det_spec: list[tuple[str, str, int]]
) -> None:
    gt = [truth(f, k, r) for f, k, r in gt_spec]
    detected = [seen(f, k, r) for f, k, r in det_spec]
    result = score(gt, detected, SCHEDULE)
    paired = [p.detected for p in result.pairs if p.detected is not None]
    assert len(result.pairs) == len(one_state_at_a_time(gt))
    assert len(paired) + len(result.false_alarms) == len(detected)
    assert len({id(d) for d in paired} | {id(d) for d in result.false_alarms}) == len(detected)
    assert result.passed == (all(p.passed for p in result.pairs) and not result.false_alarms)
