"""The per-flow enforcement, driven with bytes and times alone (no sockets, no clock)."""

from __future__ import annotations

import pytest

from noisewall.censor.enforcement import SHAPED_READ, FlowEnforcement, Opening
from noisewall.censor.policy import Action, Decision


def _decided(action: Action, *, fail: bool = False, after: int | None = None) -> FlowEnforcement:
    enforcement = FlowEnforcement(after)
    enforcement.start(Decision("r", action, fail=fail))
    return enforcement


def test_bytes_pass_unchanged_before_the_decision() -> None:
    enforcement = FlowEnforcement(1024)
    plan = enforcement.forward(b"SSH-2.0-x\r\n", upstream=False, now=5.0)
    assert [(c.data, c.due) for c in plan.chunks] == [(b"SSH-2.0-x\r\n", 5.0)]
    assert not plan.hold and enforcement.forwards_eof and not enforcement.kernel_eligible
    assert enforcement.bytes_down == 11


@pytest.mark.parametrize(("action", "fail", "opening"), [
    (Action("allow"), False, Opening.RELAY),
    (Action("reset"), False, Opening.RESET),
    (Action("drop"), False, Opening.HOLD),
    (Action("throttle", rate_kbps=8), False, Opening.RELAY),
    (Action("flaky", fail=1.0), True, Opening.RESET),
    (Action("flaky", fail=1.0), False, Opening.RELAY),
])
def test_the_opening_follows_the_effect(action: Action, fail: bool, opening: Opening) -> None:
    assert FlowEnforcement().start(Decision("r", action, fail=fail)) is opening


def test_allow_goes_to_the_kernel_once_bulk() -> None:
    enforcement = _decided(Action("allow"), after=100)
    enforcement.forward(b"x" * 60, upstream=True, now=0)
    assert enforcement.kernel_eligible and not enforcement.to_kernel
    enforcement.forward(b"y" * 40, upstream=False, now=0)
    assert enforcement.to_kernel
    assert not _decided(Action("allow")).kernel_eligible  # no kernel relay configured


def test_delay_dates_every_chunk_later() -> None:
    plan = _decided(Action("delay", ms=300)).forward(b"abc", upstream=True, now=10.0)
    assert [c.due for c in plan.chunks] == [pytest.approx(10.3)]


def test_throttle_spreads_bytes_at_the_rate() -> None:
    enforcement = _decided(Action("throttle", rate_kbps=80))  # 10,000 bytes/s, 1500-byte bursts
    plan = enforcement.forward(b"z" * 11500, upstream=True, now=0.0)
    assert b"".join(c.data for c in plan.chunks) == b"z" * 11500
    assert max(len(c.data) for c in plan.chunks) == 1500
    assert plan.chunks[-1].due == pytest.approx(1.0)  # 11,500 bytes - 1,500 burst = 1 s at the rate
    assert [c.due for c in plan.chunks] == sorted(c.due for c in plan.chunks)
    assert not enforcement.kernel_eligible


@pytest.mark.parametrize("action", [
    Action("throttle", rate_kbps=64), Action("delay", ms=150),
    Action("drop"),
])
def test_flows_that_do_not_pass_freely_read_kilobytes_at_a_time(action: Action) -> None:
    # Issue 18: a throttled or delayed flow reads only what it will soon release.
    enforcement = _decided(action)
    assert not enforcement.passes_freely
    assert enforcement.read_size(1 << 20) == SHAPED_READ <= 16 * 1024


def test_free_and_undecided_flows_read_as_much_as_they_are_offered() -> None:
    assert FlowEnforcement().read_size(1 << 20) == 1 << 20
    assert _decided(Action("allow")).passes_freely
    assert _decided(Action("allow")).read_size(1 << 20) == 1 << 20


def test_stall_forwards_up_to_the_limit_then_holds() -> None:
    enforcement = _decided(Action("flaky", fail=1.0, mode="stall", stall_after_bytes=10), fail=True)
    first = enforcement.forward(b"a" * 6, upstream=True, now=0)
    second = enforcement.forward(b"b" * 6, upstream=False, now=0)
    assert [c.data for c in first.chunks + second.chunks] == [b"a" * 6, b"b" * 4]
    assert enforcement.forward(b"c", upstream=True, now=0).hold
    assert not enforcement.forwards_eof


@pytest.mark.parametrize("action", [Action("drop"), Action("reset")])
def test_blocked_flows_forward_nothing(action: Action) -> None:
    enforcement = _decided(action)
    plan = enforcement.forward(b"data", upstream=True, now=0)
    assert plan.hold and plan.chunks == () and enforcement.moved == 0
    assert not enforcement.forwards_eof
