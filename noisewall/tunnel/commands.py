"""``noisewall tunnel``: the tunnel's server and client ends."""

from __future__ import annotations

import click


@click.group()
def tunnel() -> None:
    """A tunnel that carries SOCKS5 streams through the censor (server and client ends)."""
