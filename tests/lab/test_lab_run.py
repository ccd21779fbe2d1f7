"""``noisewall lab`` as a user runs it: a real subprocess, real sockets, a simulated clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from noisewall.lab.scenario import shipped_scenarios

#: A compressed china-2017: media blocked, text flapping, then throttled,
#: over 18 simulated days at 12 h rounds, probed directly and through the censor.
MINI = """\
name: mini-china
start: 2017-09-01
end: 2017-09-19
interval: 12h
network: {name: "lab net", asn: AS64500, cc: CN}
features: [text, photo]
vantages:
  - {name: direct, path: censor}
  - {name: control, path: direct}
timeline:
  - name: media-blocked
    source: illustrative
    match: {protocol: tls, server: 127.0.10.2}
    action: reset
    active: [{from: 2017-09-04}]
    expect: {features: [photo]}
  - name: text-flapping
    source: illustrative
    match: {protocol: noisesocket, server: 127.0.10.1}
    action: {kind: flaky, fail: 0.6}
    active: [{from: 2017-09-06, until: 2017-09-13}]
    expect: {features: [text]}
  - name: text-throttled
    source: illustrative
    match: {protocol: noisesocket, server: 127.0.10.1}
    action: {kind: throttle, rate_kbps: 32}
    active: [{from: 2017-09-13}]
    expect: {features: [text]}
"""


def lab_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "noisewall", "lab", *args]


def lab_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def lab(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(lab_argv(*args), cwd=cwd, env=lab_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_broken_scenario_is_one_line_with_file_line_and_field(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MINI.replace("fail: 0.6", "fail: 1.6"), encoding="utf-8")
    result = lab(str(broken), cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    line = MINI[: MINI.index("fail: 0.6")].count("\n") + 1
    assert result.stderr.strip() == (f"noisewall: error: {broken}:{line}: "
                                     "timeline[1].action.fail: must be at most 1")
    assert not (tmp_path / "lab-out").exists(), "nothing runs on a broken scenario"


def test_unknown_scenario_names_the_shipped_ones(tmp_path: Path) -> None:
    result = lab("atlantis-2030", cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert "atlantis-2030: no such file or shipped scenario" in result.stderr
    for name in shipped_scenarios():
        assert name in result.stderr


def _stable(event: dict[str, Any]) -> tuple[Any, ...]:
    """What a seed must reproduce: not throughput figures, which are real-time measurements."""
    return (event["vantage"], event["feature"], event["kind"], event["onset"], event["end"],
            event["rounds"], event["success_fraction"], event["failure"])


@pytest.mark.slow
@pytest.mark.xdist_group("throughput-a")  # timed throughput: see tests/lab/test_shipped.py
def test_mini_scenario_scores_and_the_same_seed_gives_the_same_events(tmp_path: Path) -> None:
    scenario = tmp_path / "mini.yaml"
    scenario.write_text(MINI, encoding="utf-8")
    # Both runs at once: the same seed must give the same events whatever else competes
    # for the machine (and the test waits out one run's throttled rounds, not two).
    processes = [subprocess.Popen(lab_argv(str(scenario), "--out", name, "--seed", "5",
                                           "--json"), cwd=tmp_path, env=lab_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name in ("a", "b")]
    runs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stdout[-3000:] + stderr[-3000:]
            runs.append(json.loads(stdout))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    first, second = runs
    assert first["ground_truth"] == second["ground_truth"]
    assert [_stable(e) for e in first["events"]] == [_stable(e) for e in second["events"]]
    assert first["score"]["passed"], json.dumps(first["score"], indent=1)
    kinds = {(p["truth"]["feature"], p["detected"]["kind"]) for p in first["score"]["pairs"]}
    assert kinds == {("photo", "blocked"), ("text", "intermittent"), ("text", "throttled")}
    out = tmp_path / "a"
    for name in ("measurements.jsonl", "measurements.chdb", "censor-decisions.jsonl",
                 "analysis.json", "report.html"):
        assert (out / name).stat().st_size > 0, name
    measurements = (out / "measurements.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(measurements) == 36 * 2  # 36 rounds x 2 vantages
    first_line = json.loads(measurements[0])
    assert first_line["measurement_start_time"] == "2017-09-01 00:00:00"  # the simulated clock
    assert first_line["probe_cc"] == "CN" and first_line["probe_asn"] == "AS64500"
    report = (out / "report.html").read_text(encoding="utf-8")
    assert "Scoring: ground truth vs detected (PASSED" in report
    assert "truth: blocked" in report and "truth: intermittent" in report
    assert json.loads((out / "analysis.json").read_text(encoding="utf-8")) == first


@pytest.mark.slow
def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    scenario = tmp_path / "mini.yaml"
    scenario.write_text(MINI.replace("end: 2017-09-19", "end: 2017-12-19"), encoding="utf-8")
    process = subprocess.Popen(lab_argv(str(scenario), "--out", "out"), cwd=tmp_path,
                               env=lab_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        measurements = tmp_path / "out" / "measurements.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if measurements.exists() and measurements.read_text(encoding="utf-8").count("\n") >= 4:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the lab did not complete two rounds in 60 s")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "aborted" in stderr
