"""``noisewall server``: the messenger's chat (and media) server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from noisewall.cli_options import parse_endpoint
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer, load_or_create_static_key
from noisewall.messenger.store import DEFAULT_TTL
from noisewall.noise.stream import FRAMINGS, Framing


async def _run_server(data: Path, listen: tuple[str, int], media_listen: tuple[str, int] | None,
                      framing: Framing, ttl: float, max_media: int) -> None:
    async with ChatServer(data, framing=framing, ttl=ttl) as chat:
        media = None
        if media_listen is not None:
            media = MediaServer(data / "media", chat.authorize_media, max_size=max_media)
            media_port = await media.start(*media_listen)
            chat.media = {"url": f"https://{media_listen[0]}:{media_port}",
                          "fingerprint": media.fingerprint.hex()}
        try:
            port = await chat.start(*listen)
            print(f"chat on {listen[0]}:{port} ({framing}), "
                  f"server key {chat.static.public.hex()}", file=sys.stderr, flush=True)
            if chat.media is not None:
                print(f"media on {chat.media['url']}, certificate sha256 "
                      f"{chat.media['fingerprint']}", file=sys.stderr, flush=True)
            await asyncio.Event().wait()
        finally:
            if media is not None:
                await media.close()


@click.command()
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              default=Path("noisewall-data"), show_default=True,
              help="Folder for the server key, database and blobs.")
@click.option("--listen", default="127.0.0.1:5222", show_default=True, metavar="HOST:PORT",
              help="Chat endpoint (NoiseSocket with Noise Pipes).")
@click.option("--media-listen", default="127.0.0.1:8443", show_default=True,
              metavar="HOST:PORT", help="Media endpoint (HTTPS, TLS 1.3); 'off' to disable.")
@click.option("--max-media-mib", default=64, show_default=True, type=click.IntRange(1),
              help="Largest media upload, in MiB (larger ones get 413).")
@click.option("--framing", type=click.Choice(FRAMINGS), default="noisesocket",
              show_default=True, help="Chat wire framing.")
@click.option("--ttl-days", default=DEFAULT_TTL / 86400, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Undelivered messages expire after this many days.")
@click.option("--show-key", is_flag=True, help="Print the server's static public key and exit.")
def server(data: Path, listen: str, media_listen: str, max_media_mib: int, framing: Framing,
           ttl_days: float, show_key: bool) -> None:
    """Run the messenger server: accounts, key directory, store-and-forward chat, media."""
    if show_key:
        click.echo(load_or_create_static_key(data).public.hex())
        return
    media = None if media_listen == "off" else parse_endpoint(media_listen)
    try:
        asyncio.run(_run_server(data, parse_endpoint(listen), media, framing,
                                ttl_days * 86400, max_media_mib * 1024 * 1024))
    except KeyboardInterrupt:
        sys.exit(130)
