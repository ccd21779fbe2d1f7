"""CPU seconds of a process and all its descendants, from ``/proc`` (Linux).

The tunnel benchmark charges each end of a tunnel with the CPU its
processes spent during a round: ``sshd`` forks a process per connection,
so a process is counted together with its children.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of ``pid``, None if it is gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields start after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root`` and every live descendant of it."""
    stats = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total
