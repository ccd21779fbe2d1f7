"""``noisewall server``: the messenger's chat (and media) server."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from noisewall.cli_options import parse_endpoint, parsed_by
from noisewall.messenger.limits import ConnectionLimits, default_max_connections
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer, load_or_create_static_key
from noisewall.messenger.store import DEFAULT_TTL
from noisewall.messenger.wechat.filters import FilterLists
from noisewall.messenger.wechat.lists import FilterListError, load_filter_lists
from noisewall.messenger.wechat.mode import MODES, Mode
from noisewall.noise.stream import FRAMINGS, Framing
from noisewall.records.endpoint import Endpoint
from noisewall.selfsigned import dns_name
from noisewall.service import run_until_interrupted


async def _run_server(data: Path, listen: Endpoint, media_listen: Endpoint | None,
                      framing: Framing, ttl: float, max_media: int,
                      media_name: str | None, limits: ConnectionLimits, *, mode: Mode = "e2e",
                      filters: FilterLists | None = None) -> None:
    chat = ChatServer(data, listen=Endpoint(*listen), framing=framing, ttl=ttl, limits=limits,
                      mode=mode, filters=filters)
    async with contextlib.AsyncExitStack() as stack:
        if media_listen is not None:
            media = await stack.enter_async_context(MediaServer(
                data / "media", chat.authorize_media, max_size=max_media,
                server_name=media_name, listen=Endpoint(*media_listen)))
            # Before the chat server listens, so that every client hears of it.
            chat.media = media.announcement(f"https://{media_listen[0]}:{media.address.port}")
        await stack.enter_async_context(chat)
        shown = framing if mode == "e2e" else f"{framing}, {mode} mode"
        print(f"chat on {listen[0]}:{chat.address.port} ({shown}), "
              f"server key {chat.static.public.hex()}", file=sys.stderr, flush=True)
        if chat.media is not None:
            named = f" as {chat.media['server_name']}" if "server_name" in chat.media else ""
            print(f"media on {chat.media['url']}{named}, certificate sha256 "
                  f"{chat.media['fingerprint']}", file=sys.stderr, flush=True)
        await chat.serve_forever()


@click.command()
@click.option("--data", type=click.Path(path_type=Path, file_okay=False),
              default=Path("noisewall-data"), show_default=True,
              help="Folder for the server key, database and blobs.")
@click.option("--listen", default="127.0.0.1:5222", show_default=True, metavar="HOST:PORT",
              help="Chat endpoint (NoiseSocket with Noise Pipes).")
@click.option("--media-listen", default="127.0.0.1:8443", show_default=True,
              metavar="HOST:PORT", help="Media endpoint (HTTPS, TLS 1.3); 'off' to disable.")
@click.option("--media-name", metavar="NAME", callback=parsed_by(dns_name),
              help="A public host name for the media server (e.g. mmg.whatsapp.net): in its "
                   "certificate, and sent by clients as the TLS SNI. Default: none.")
@click.option("--max-media-mib", default=64, show_default=True, type=click.IntRange(1),
              help="Largest media upload, in MiB (larger ones get 413).")
@click.option("--framing", type=click.Choice(FRAMINGS), default="noisesocket",
              show_default=True, help="Chat wire framing.")
@click.option("--ttl-days", default=DEFAULT_TTL / 86400, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Undelivered messages expire after this many days.")
@click.option("--mode", type=click.Choice(MODES), default="e2e", show_default=True,
              help="e2e: messages are end-to-end encrypted and opaque to the server. wechat: "
                   "the server reads every message and censors it with --filters (docs/wechat.md).")
@click.option("--filters", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Filter lists (YAML: keyword combinations, image hashes). Only a --mode "
                   "wechat server can act on them; an e2e server says so and ignores them.")
@click.option("--max-connections", type=click.IntRange(1), metavar="N",
              help="Chat connections open at once; more are closed when accepted. "
                   "Default: 3/4 of the open-file limit (ulimit -n).")
@click.option("--max-unregistered", type=click.IntRange(1), metavar="N",
              help="Of those, connections whose key has no account yet; more get "
                   "'server_busy'. Default: half of --max-connections.")
@click.option("--auth-timeout", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds a connection may stay without an account after its handshake.")
@click.option("--show-key", is_flag=True, help="Print the server's static public key and exit.")
def server(data: Path, listen: str, media_listen: str, media_name: str | None,
           max_media_mib: int, framing: Framing, ttl_days: float, mode: Mode,
           filters: Path | None, max_connections: int | None, max_unregistered: int | None,
           auth_timeout: float, show_key: bool) -> None:
    """Run the messenger server: accounts, key directory, store-and-forward chat, media."""
    if show_key:
        click.echo(load_or_create_static_key(data).public.hex())
        return
    media = None if media_listen == "off" else parse_endpoint(media_listen)
    try:
        lists = None if filters is None else load_filter_lists(filters)
    except FilterListError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        limits = ConnectionLimits(
            max_connections=max_connections or default_max_connections(),
            max_unregistered=max_unregistered, auth_timeout=auth_timeout)
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint="--max-unregistered") from None
    run_until_interrupted(_run_server(data, parse_endpoint(listen), media, framing,
                                      ttl_days * 86400, max_media_mib * 1024 * 1024, media_name,
                                      limits, mode=mode, filters=lists))


