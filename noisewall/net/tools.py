"""Running ``ip`` and ``nft``: argv lists only, failures as one-line :class:`NetError`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from noisewall.errors import NetError

_PACKAGES = {"ip": "iproute2", "nft": "nftables"}


def require_root() -> None:
    """NetError unless this process may create network namespaces."""
    if os.geteuid() != 0:
        raise NetError("noisewall net needs root: network namespaces, veth pairs and nftables "
                       "rules are made with CAP_SYS_ADMIN and CAP_NET_ADMIN")


def tool(name: str) -> str:
    """The path of ``ip`` or ``nft``, or NetError naming the Debian package that has it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise NetError(f"the {name!r} tool is missing (apt-get install {_PACKAGES[name]})")
    return path


def run(name: str, *args: str, stdin: str | None = None) -> str:
    """Run ``name args...`` and return its stdout, or NetError with its first stderr line."""
    argv = [tool(name), *args]
    result = subprocess.run(argv,  # noqa: S603 - argv list, no shell
                            input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetError(f"{' '.join(argv[1:])[:200]}: {_first_line(result.stderr)}")
    return result.stdout


def run_quietly(name: str, *args: str) -> bool:
    """Run ``name args...``, ignoring failure (teardown of what may already be gone)."""
    argv = [tool(name), *args]
    return subprocess.run(argv,  # noqa: S603 - argv list, no shell
                          capture_output=True, check=False).returncode == 0


def ip_in(namespace: str, *args: str) -> str:
    """``ip -n NAMESPACE args...``."""
    return run("ip", "-n", namespace, *args)


def netns_exec_argv(namespace: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` in ``namespace`` with its /etc/netns files in place."""
    return [tool("ip"), "netns", "exec", namespace, *argv]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "failed"
