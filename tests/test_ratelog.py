"""RateLimitedLog: a burst per period and kind, then a count of what was left out."""

from __future__ import annotations

import logging

import pytest

from noisewall.ratelog import RateLimitedLog


def test_a_flood_writes_a_burst_then_one_line_with_the_count(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t.ratelog"), burst=2, period=10,
                             clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "t.ratelog"):
        written = [limited.log(logging.INFO, "refused", "closed %d", i) for i in range(1000)]
        assert limited.log(logging.INFO, "timeout", "timed out")  # another kind has its own
        now[0] = 10.0
        assert limited.log(logging.INFO, "refused", "closed %d", 1000)
    assert written == [True, True] + [False] * 998
    assert [r.getMessage() for r in caplog.records] == [
        "closed 0", "closed 1", "timed out",
        "closed 1000 (998 similar lines left out in the last 10 s)"]
