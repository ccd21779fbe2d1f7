"""``noisewall lab --net``: the same scenario in a lab network, the censor in the path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.test_lab_run import MINI, lab
from tests.netns import require_netns

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300


def _lab_namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.startswith("noisewall-lab")}


@pytest.mark.slow
@pytest.mark.xdist_group("throughput-a")  # timed throughput: see tests/lab/test_shipped.py
def test_lab_net_scores_the_same_scenario_with_the_censor_in_the_path(tmp_path: Path) -> None:
    require_netns()
    scenario = tmp_path / "mini.yaml"
    scenario.write_text(MINI, encoding="utf-8")
    before = _lab_namespaces()
    result = lab(str(scenario), "--net", "--no-arms-race", "--json", "--out",
                 str(tmp_path / "out"), cwd=tmp_path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-2000:]
    analysis = json.loads(result.stdout)
    assert analysis["mode"] == "lab network"
    assert analysis["score"]["passed"]
    decisions = [json.loads(line) for line in
                 (tmp_path / "out" / "censor-decisions.jsonl").read_text().splitlines()]
    # The censor saw the users' own address and the servers' (rules written for the
    # loopback block moved to the network's), with no proxy in between.
    clients = {d["client"].rsplit(":", 1)[0] for d in decisions}
    servers = {d["server"].rsplit(":", 1)[0] for d in decisions}
    assert clients == {"198.51.100.2"}
    assert servers == {"203.0.113.1", "203.0.113.2"}
    assert {d["effect"] for d in decisions if d["rule"] == "media-blocked"} == {"reset"}
    assert _lab_namespaces() <= before  # the run's network is gone (others may end too)


@pytest.mark.slow
def test_kill_9_of_lab_net_then_down_all_leaves_nothing(tmp_path: Path) -> None:
    require_netns()
    scenario = tmp_path / "mini.yaml"
    scenario.write_text(MINI, encoding="utf-8")
    # In a mount and network namespace of its own (tests.net.killed_run): `down --all`
    # there cannot touch the networks of tests running beside this one.
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "--",
         sys.executable, "-m", "tests.lab.killed_lab", str(scenario), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["killed_status"] == -signal.SIGKILL
    before, after = report["before"], report["after"]
    assert "-inside" in before["netns"] and "-border" in before["netns"]
    assert report["down"]["status"] == 0, report["down"]["stderr"]
    assert after["netns"] == ""
    assert "noisewall" not in after["ruleset"]
    assert "nw-" not in after["links"]
    assert after["etc_netns"] == [] and not after["run_noisewall"]
    assert report["measured_before_kill"] >= 1
