"""Running ``noisewall`` as a separate process, as a user would."""

from __future__ import annotations

import subprocess
import sys

TIMEOUT = 60


def noisewall(*args: str) -> subprocess.CompletedProcess[str]:
    """``noisewall ARGS...``, its output captured."""
    return subprocess.run([sys.executable, "-m", "noisewall", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
