"""``noisewall lab``: replay a scenario and score the observatory against its ground truth."""

from __future__ import annotations

import click


@click.command()
def lab() -> None:
    """Replay a censorship scenario (default: china-2017) and score what was detected."""
