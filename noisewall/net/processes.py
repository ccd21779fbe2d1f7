"""Stopping processes left in a lab network: SIGTERM, a short grace, then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from noisewall.net import tools

GRACE_SECONDS = 3.0
_POLL_SECONDS = 0.02


def pids_in(namespace: str) -> list[int]:
    """Processes whose network namespace is ``namespace`` (this one never among them)."""
    if not tools.run_quietly("ip", "netns", "pids", namespace):
        return []
    output = tools.run("ip", "netns", "pids", namespace)
    return [pid for pid in map(int, output.split()) if pid != os.getpid()]


def pid_from_file(path: Path, marker: str) -> int | None:
    """The pid in ``path`` if that process still runs and its command line has ``marker``.

    The check guards against a pid reused by an unrelated process since.
    """
    try:
        pid = int(path.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if marker.encode() in command else None


def stop(pids: Iterable[int], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM each of ``pids``, SIGKILL those still there after ``grace`` seconds."""
    remaining = {pid for pid in pids if _signal(pid, signal.SIGTERM)}
    deadline = time.monotonic() + grace
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if alive(pid)}
        if remaining:
            time.sleep(_POLL_SECONDS)
    for pid in remaining:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if alive(pid)}
        if remaining:
            time.sleep(_POLL_SECONDS)


def _signal(pid: int, signum: signal.Signals) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def alive(pid: int) -> bool:
    """False once ``pid`` has exited or is a zombie (reaped if it is this process's child)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"
