"""``noisewall server``: the messenger's chat (and media) server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from noisewall.cli_options import parse_endpoint
from noisewall.messenger.server import ChatServer, load_or_create_static_key
from noisewall.messenger.store import DEFAULT_TTL
from noisewall.noise.stream import FRAMINGS, Framing


async def _run_server(data: Path, listen: tuple[str, int], framing: Framing,
                      ttl: float) -> None:
    async with ChatServer(data, framing=framing, ttl=ttl) as chat:
        port = await chat.start(*listen)
        print(f"chat on {listen[0]}:{port} ({framing}), server key {chat.static.public.hex()}",
              file=sys.stderr, flush=True)
        await asyncio.Event().wait()


@click.command()
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              default=Path("noisewall-data"), show_default=True,
              help="Folder for the server key, database and blobs.")
@click.option("--listen", default="127.0.0.1:5222", show_default=True, metavar="HOST:PORT",
              help="Chat endpoint (NoiseSocket with Noise Pipes).")
@click.option("--framing", type=click.Choice(FRAMINGS), default="noisesocket",
              show_default=True, help="Chat wire framing.")
@click.option("--ttl-days", default=DEFAULT_TTL / 86400, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Undelivered messages expire after this many days.")
@click.option("--show-key", is_flag=True, help="Print the server's static public key and exit.")
def server(data: Path, listen: str, framing: Framing, ttl_days: float, show_key: bool) -> None:
    """Run the messenger server: accounts, key directory, store-and-forward chat."""
    if show_key:
        click.echo(load_or_create_static_key(data).public.hex())
        return
    try:
        asyncio.run(_run_server(data, parse_endpoint(listen), framing, ttl_days * 86400))
    except KeyboardInterrupt:
        sys.exit(130)
