"""``noisewall observe``: ingest, analyze and report measurements."""

from __future__ import annotations

import click


@click.group()
def observe() -> None:
    """Store measurements, detect blocking / throttling / flapping, and report a timeline."""
