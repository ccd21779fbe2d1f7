"""Starting and stopping a network's resolver as a detached process in its outside namespace."""

from __future__ import annotations

import selectors
import subprocess
import sys

from noisewall.errors import NetError
from noisewall.net import processes, tools
from noisewall.net.hosts import hosts_path
from noisewall.net.topology import Network, Side

STARTUP_SECONDS = 10.0
PID_FILE = "resolver.pid"
LOG_FILE = "resolver.log"
MODULE = "noisewall.net.resolver"

_started: dict[int, subprocess.Popen[bytes]] = {}
"""Resolvers this process started, kept so that they are reaped, not reported as leaked."""


def start(network: Network) -> int:
    """Start ``network``'s resolver, wait until it answers, and return its pid."""
    command = tools.netns_exec_argv(network.namespace(Side.OUTSIDE), [
        sys.executable, "-m", MODULE, "--hosts", str(hosts_path(network)),
        "--address", str(network.resolver)])
    with open(network.state_dir / LOG_FILE, "ab") as log:
        # A session of its own: the resolver outlives `net up` and ignores its terminal's Ctrl-C.
        process = subprocess.Popen(  # noqa: S603 - argv list, no shell
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=log, start_new_session=True)
    assert process.stdout is not None
    with process.stdout, selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = bool(selector.select(STARTUP_SECONDS)) and process.stdout.readline() == b"ready\n"
    if not ready:
        processes.stop([process.pid])
        raise NetError(f"the resolver of network {network.name!r} did not start (see "
                       f"{network.state_dir / LOG_FILE})")
    (network.state_dir / PID_FILE).write_text(f"{process.pid}\n")
    _started[process.pid] = process
    return process.pid


def running_pid(network: Network) -> int | None:
    """The resolver's pid if it runs."""
    return processes.pid_from_file(network.state_dir / PID_FILE, MODULE)


def stop(network: Network) -> None:
    """Stop ``network``'s resolver if it runs."""
    pid = running_pid(network)
    if pid is not None:
        processes.stop([pid])
    for started in [p for p in _started.values() if p.poll() is not None]:
        del _started[started.pid]
