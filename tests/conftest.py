"""Shared fixtures: the read-only ``shared/`` folder beside the checkout; a lab network;
test ids that every pytest-xdist worker computes alike; slow tests first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from noisewall.net import Network, temporary_network
from tests.netns import require_netns, unique_network_name

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
#: A byte-string parameter's id shows this many leading bytes, then its length.
ID_BYTES = 24


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


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Long byte strings are named by their first bytes and length.

    Some are made at import (a Noise handshake carries a fresh ephemeral key),
    so naming them by all their bytes gives each xdist worker other test ids,
    and xdist refuses to run.
    """
    if isinstance(val, bytes | bytearray) and len(val) > ID_BYTES:
        return f"{bytes(val[:ID_BYTES])!r}"[2:-1] + f"...{len(val)}B"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, so parallel workers start the longest ones early and do not end on
    them one by one (the order within each group stays as collected)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
