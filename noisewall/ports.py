"""A port number for programs that take a number, not 0 (sshd, shadowsocks, a server restarted).

The number is only known to be free when it is picked; the program binds it
later, so another socket may take it in between. The common taker on a busy
machine is an outgoing connection, which the kernel gives a port from its
ephemeral range: picking outside that range leaves only other listeners to
race with.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_ATTEMPTS = 200


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (in the calling thread's network namespace).

    Chosen at random outside the kernel's ephemeral range when one is free
    there, else any free port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = _ephemeral_range()
    choices = [*range(10_000, low), *range(high + 1, 65_536)]
    candidates: list[int] = random.sample(choices, min(_ATTEMPTS, len(choices)))
    for port in candidates:
        with socket.socket(family) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
