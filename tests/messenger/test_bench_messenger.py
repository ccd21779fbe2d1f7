"""``noisewall bench messenger --quick --json`` runs end to end (a smoke test, not the targets)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KINDS = ("relayed messages", "E2E text messages", "E2E latency p50", "E2E latency p99",
         "relay latency p50", "relay latency p99", "server memory per idle")


@pytest.mark.slow
def test_bench_messenger_quick_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "noisewall", "bench", "messenger", "--quick", "--json"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report["machine"], str) and report["machine"]
    lines = report["results"]
    for line, kind in zip(lines, KINDS, strict=True):
        assert line["name"].startswith(kind), line["name"]
    units = [line["unit"] for line in lines]
    assert units == ["messages/s", "messages/s", "ms", "ms", "ms", "ms", "KiB"]
    for line in lines:
        assert set(line) == {"name", "unit", "value", "baseline_name", "baseline", "ratio"}
        assert isinstance(line["baseline_name"], str) and line["baseline_name"]
        assert line["value"] > 0 and line["baseline"] > 0
        assert line["ratio"] == pytest.approx(line["value"] / line["baseline"], rel=1e-2)
    assert "1,000 held" in lines[-1]["name"]
