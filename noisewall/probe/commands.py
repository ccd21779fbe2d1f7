"""``noisewall probe``: measure each messenger feature the way the app uses it."""

from __future__ import annotations

import click


@click.command()
def probe() -> None:
    """Probe the messenger's features and write OONI-format measurements."""
