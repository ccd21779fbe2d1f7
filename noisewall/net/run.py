"""Running an unmodified program in a lab namespace, as ``ip netns exec`` does.

``ip netns exec`` switches the network namespace, mounts the namespace's
/etc/netns files over /etc (the lab's resolv.conf and trust store) and a
fresh /sys, then execs the program in place: no shell, no extra process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from noisewall.errors import NetError
from noisewall.net import tools
from noisewall.net.enter import NETNS_DIR
from noisewall.net.topology import Network, Side

COMMAND_NOT_FOUND = 127
"""The exit status of a program that does not exist, as a shell gives it."""


def run_argv(network: Network, side: Side, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` in ``network``'s ``side`` (for ``subprocess``).

    NetError if the network is not up or ``argv`` is empty; the program
    itself is looked up when it runs.
    """
    if not argv:
        raise NetError("no program to run: give it after --")
    namespace = network.namespace(side)
    if not (NETNS_DIR / namespace).exists():
        raise NetError(f"network {network.name!r} is not up (noisewall net up --name "
                       f"{network.name})")
    return tools.netns_exec_argv(namespace, argv)


def exec_in(network: Network, side: Side, argv: Sequence[str]) -> None:
    """Replace this process with ``argv`` run in ``network``'s ``side``; never returns.

    The program keeps this process's pid, so signals reach it directly and
    its exit status is the caller's. A program that is not found is a
    NetError (the CLI exits 127 for it, as a shell does).
    """
    command = run_argv(network, side, argv)
    if shutil.which(argv[0]) is None:
        raise ProgramNotFound(f"{argv[0]}: command not found")
    os.execv(command[0], command)  # noqa: S606 - the user's argv, no shell


class ProgramNotFound(NetError):
    """The program given to ``net run`` does not exist or is not executable."""
