"""kill -9 of a running ``noisewall lab --net``, in a mount and network namespace of its own.

``unshare --mount --net --propagation private -- python -m tests.lab.killed_lab SCENARIO OUT``
isolates itself as :mod:`tests.net.killed_run` does, starts the lab in the lab
network, waits for its first measurement (the network, the censor's nftables
table and every service are up), kills it with SIGKILL, runs ``noisewall net
down --all`` and prints, as JSON, what existed before and what is left after.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.net.killed_run import _down_all, _isolate, _leftovers

STARTUP = 120.0


def main() -> None:
    """Run the scenario ``argv[1]`` into folder ``argv[2]`` and print the findings."""
    scenario, out = sys.argv[1], Path(sys.argv[2])
    _isolate()
    lab = subprocess.Popen([sys.executable, "-m", "noisewall", "lab", scenario, "--net",
                            "--no-arms-race", "--out", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        print(json.dumps(_kill_and_clean(lab, out / "measurements.jsonl")))
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
        _down_all()


def _kill_and_clean(lab: subprocess.Popen[bytes], measurements: Path) -> dict[str, Any]:
    deadline = time.monotonic() + STARTUP
    measured = 0
    while time.monotonic() < deadline and lab.poll() is None and not measured:
        time.sleep(0.1)
        if measurements.exists():
            measured = len(measurements.read_bytes().splitlines())
    lab.send_signal(signal.SIGKILL)
    lab.wait()
    before = _leftovers()
    down = _down_all()
    return {
        "killed_status": lab.returncode, "measured_before_kill": measured, "before": before,
        "down": {"status": down.returncode, "stdout": down.stdout, "stderr": down.stderr},
        "after": _leftovers(),
    }


if __name__ == "__main__":
    main()
