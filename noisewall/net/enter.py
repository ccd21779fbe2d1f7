"""Entering a lab namespace from Python: the calling thread only, and back again.

Python 3.11 has no ``os.setns``; ``setns(2)`` is called through libc. A
network namespace is per thread: sockets made while inside stay bound to that
namespace after the thread returns, so a server can open its listening socket
in the outside namespace and serve it from an event loop running anywhere.
Threads started while inside inherit the namespace. Only the network
namespace changes: /etc stays the host's (``ip netns exec``, used by
:func:`noisewall.net.run.run_argv`, also swaps in the lab's resolv.conf and
trust store).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from noisewall.errors import NetError

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetError(f"setns: {os.strerror(errno)}")


@contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run the body with the calling thread in network namespace ``namespace``.

    NetError if the namespace does not exist (the network is not up).
    """
    try:
        target = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetError(f"network namespace {namespace!r} does not exist "
                       "(is the network up? noisewall net status)") from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)
