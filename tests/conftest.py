"""Shared fixtures: the read-only ``shared/`` folder beside the checkout; a lab network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from noisewall.net import Network, temporary_network
from tests.netns import require_netns, unique_network_name

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def shared_file(relative: str) -> Path:
    """A file under ../shared, or a test failure that names exactly what is missing."""
    path = SHARED / relative
    if not path.is_file():
        pytest.fail(f"required input missing: {path} (the shared/ folder must sit beside the "
                    "checkout)", pytrace=False)
    return path


@pytest.fixture
def lab_network() -> Iterator[Network]:
    """A lab network of this test's own (unique name), down afterwards; skips without netns."""
    require_netns()
    with temporary_network(unique_network_name()) as network:
        yield network
