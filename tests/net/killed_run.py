"""The kill -9 scenario, run in a mount and network namespace of its own (see test_teardown).

``unshare --mount --net --propagation private -- python -m tests.net.killed_run NAME``:
puts fresh tmpfs over /run (so /run/netns and /run/noisewall) and over
/etc/netns, so that ``down --all`` here sees only what this run makes and
cannot touch the networks of tests or people running beside it. Then it
brings a network up in a holder process, kills that with SIGKILL, runs
``noisewall net down --all`` and prints, as JSON, what existed before and
what is left after.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from noisewall.net.processes import alive

TIMEOUT = 60


def _isolate() -> None:
    Path("/etc/netns").mkdir(exist_ok=True)  # iproute2's own folder; only the mount point
    for folder in ("/run", "/etc/netns"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", folder], check=True)


def _output(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True,
                          timeout=TIMEOUT).stdout


def _leftovers() -> dict[str, Any]:
    return {
        "netns": _output("ip", "netns", "list"),
        "ruleset": _output("nft", "list", "ruleset"),
        "links": _output("ip", "-brief", "link", "show"),
        "etc_netns": sorted(p.name for p in Path("/etc/netns").iterdir()),
        "run_noisewall": Path("/run/noisewall").exists(),
    }


def main() -> None:
    """Run the scenario for network ``argv[1]`` and print the findings."""
    name = sys.argv[1]
    _isolate()
    for table in ("noisewall_leftover", "someone_else"):
        _output("nft", "add", "table", "inet", table)
    holder = subprocess.Popen([sys.executable, "-m", "tests.net.holder", name, "sync"],
                              stdout=subprocess.PIPE, text=True)
    try:
        print(json.dumps(_kill_and_clean(name, holder)))
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(TIMEOUT)
        if holder.stdout is not None:
            holder.stdout.close()
        # Whatever went wrong above, no resolver of this run may outlive it.
        _down_all()


def _kill_and_clean(name: str, holder: subprocess.Popen[str]) -> dict[str, Any]:
    assert holder.stdout is not None
    ready = holder.stdout.readline()
    resolver_pid = int(Path(f"/run/noisewall/net/{name}/resolver.pid").read_text())
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(TIMEOUT)
    before = _leftovers()
    down = _down_all()
    return {
        "ready": ready, "killed_status": holder.returncode,
        "before": before,
        "down": {"status": down.returncode, "stdout": down.stdout, "stderr": down.stderr},
        "after": _leftovers(), "resolver_alive_after": alive(resolver_pid),
    }


def _down_all() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewall", "net", "down", "--all"],
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


if __name__ == "__main__":
    main()
