"""Running ``noisewall`` as a separate process, as a user would."""

from __future__ import annotations

import subprocess
import sys

TIMEOUT = 60


def noisewall(*args: str, uid: int | None = None) -> subprocess.CompletedProcess[str]:
    """``noisewall ARGS...`` (as user and group ``uid`` if given), its output captured."""
    command = [sys.executable, "-m", "noisewall", *args]
    if uid is not None:
        command = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
