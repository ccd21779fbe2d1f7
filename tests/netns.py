"""Network namespace tests: made only where namespaces can be, and required under CI.

``require_netns()`` skips a test with the reason when this machine cannot
make network namespaces (not root, no ``ip``, no CLONE_NEWNET); with
``NOISEWALL_REQUIRE_NETNS=1`` (``.ci/run`` sets it) the same reason fails
the test instead, so a CI run cannot pass with its namespace tests skipped.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess

import pytest

REQUIRE_ENV = "NOISEWALL_REQUIRE_NETNS"


@functools.cache
def netns_unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"network namespace tests need {tool!r} (apt-get install {package})"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return f"network namespaces unavailable: unshare --net: {probe.stderr.strip()}"
    return None


def require_netns() -> None:
    """Skip (or, under ``NOISEWALL_REQUIRE_NETNS=1``, fail) unless namespaces can be made."""
    reason = netns_unavailable_reason()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: these tests must run here)", pytrace=False)
    pytest.skip(reason)


def require_program(program: str, package: str) -> None:
    """Skip unless ``program`` is installed; under ``NOISEWALL_REQUIRE_NETNS=1`` (CI, which
    installs every Debian package the tests use) its absence is a failure, not a skip."""
    if shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin"):
        return
    reason = f"{program} is not installed (Debian: {package})"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


def unique_network_name() -> str:
    """A network name no other test (here or in a parallel run) uses: ``t`` and 7 hex digits."""
    return "t" + secrets.token_hex(4)[:7]
