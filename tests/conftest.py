"""Shared fixtures: locating the read-only ``shared/`` folder beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def shared_file(relative: str) -> Path:
    """A file under ../shared, or a test failure that names exactly what is missing."""
    path = SHARED / relative
    if not path.is_file():
        pytest.fail(f"required input missing: {path} (the shared/ folder must sit beside the "
                    "checkout)", pytrace=False)
    return path
