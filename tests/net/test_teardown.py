"""Nothing of noisewall stays: a temporary network goes down on SIGTERM and Ctrl-C, and
``noisewall net down --all`` removes what a SIGKILLed run left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisewall.net import Network, Side
from noisewall.net.enter import NETNS_DIR
from noisewall.net.processes import alive
from tests.netns import require_netns, unique_network_name

TIMEOUT = 90
REPO = Path(__file__).resolve().parents[2]


def _remains(name: str) -> list[str]:
    network = Network.named(name)
    paths = [NETNS_DIR / network.namespace(side) for side in Side]
    paths += [network.etc_dir(side) for side in Side] + [network.state_dir]
    return [str(path) for path in paths if path.exists()]


@pytest.mark.parametrize(("mode", "signals"), [
    ("sync", [signal.SIGTERM]), ("sync", [signal.SIGINT]),
    ("async", [signal.SIGTERM]), ("async", [signal.SIGINT]),
    ("sync", [signal.SIGTERM, signal.SIGTERM, signal.SIGINT]),  # impatient: during teardown
])
def test_a_signalled_run_takes_its_network_down(mode: str,
                                                 signals: list[signal.Signals]) -> None:
    require_netns()
    name = unique_network_name()
    holder = subprocess.Popen([sys.executable, "-m", "tests.net.holder", name, mode],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "up\n"
        resolver_pid = int((Network.named(name).state_dir / "resolver.pid").read_text())
        assert _remains(name)
        for signum in signals:
            holder.send_signal(signum)
            time.sleep(0.03)
        holder.wait(TIMEOUT)
        remains, resolver_alive = _remains(name), alive(resolver_pid)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(TIMEOUT)
        # Hygiene only: what the holder left is measured above, before this.
        subprocess.run([sys.executable, "-m", "noisewall", "net", "down", "--name", name],
                       capture_output=True, timeout=TIMEOUT, check=False)
        for stream in (holder.stdout, holder.stderr):
            if stream is not None:
                stream.close()
    assert holder.returncode != 0
    assert not resolver_alive
    assert remains == []


def test_down_all_after_kill_9_leaves_nothing_of_noisewall() -> None:
    require_netns()
    name = unique_network_name()
    # In a mount and network namespace of its own: `down --all` must not see the networks of
    # tests running beside this one (see killed_run).
    result = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "--",
         sys.executable, "-m", "tests.net.killed_run", name],
        capture_output=True, text=True, timeout=TIMEOUT * 2, check=False, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ready"] == "up\n" and report["killed_status"] == -signal.SIGKILL
    before, after = report["before"], report["after"]
    assert f"noisewall-{name}-inside" in before["netns"]  # the SIGKILL left the network up
    assert len(before["etc_netns"]) == 3 and before["run_noisewall"]
    assert report["down"]["status"] == 0, report["down"]["stderr"]
    assert name in report["down"]["stdout"]
    assert after["netns"] == ""
    assert "noisewall" not in after["ruleset"] and "someone_else" in after["ruleset"]
    assert "nw-" not in after["links"]
    assert after["etc_netns"] == [] and not after["run_noisewall"]
    assert not report["resolver_alive_after"]
