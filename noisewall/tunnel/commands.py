"""``noisewall tunnel``: the tunnel's server and client ends."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from noisewall.allocator import tune_allocator
from noisewall.cli_options import json_option, parse_endpoint
from noisewall.noise.keys import parse_hex_key
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import TRANSPORT_NAMES
from noisewall.service import run_until_interrupted
from noisewall.tunnel.armsrace import loopback_sources, measure_blocking
from noisewall.tunnel.client import TunnelClient
from noisewall.tunnel.config import (
    KEY_SIZE,
    TunnelClientConfig,
    TunnelConfigError,
    TunnelServerConfig,
)
from noisewall.tunnel.keyfile import load_or_create_key, read_client_keys
from noisewall.tunnel.server import TunnelServer
from noisewall.tunnel.transports.tls import DEFAULT_SNI
from noisewall.yamlspec import field_name, schema_message

F = TypeVar("F", bound=Callable[..., Any])


def _endpoint(_ctx: click.Context, _param: click.Parameter, value: str) -> Endpoint:
    return parse_endpoint(value)


def _transport_option(func: F) -> F:
    return click.option("--transport", type=click.Choice(TRANSPORT_NAMES), default="tls",
                        show_default=True, help="How the tunnel looks on the wire.")(func)


def _key_option(func: F) -> F:
    return click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path),
                        required=True,
                        help="This end's static key (hex), created if missing.")(func)


def _client_options(func: F) -> F:
    """The options of a client end: the server, its key, this end's key, transport and SNI."""
    for option in (
        click.option("--sni", default=DEFAULT_SNI, show_default=True, help="tls: the cover SNI."),
        _transport_option,
        _key_option,
        click.option("--server-key", required=True, metavar="HEX",
                     help="The server's public key."),
        click.option("--server", "server_address", required=True, callback=_endpoint,
                     metavar="HOST:PORT",
                     help="The tunnel server as the client sees it (or the censor route to it)."),
    ):
        func = option(func)
    return func


def _config(model: type[TunnelServerConfig] | type[TunnelClientConfig],
            **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_name(tuple(first["loc"])) or "configuration"
        raise TunnelConfigError(f"{where}: {schema_message(first)}") from None


@click.group()
def tunnel() -> None:
    """A tunnel that carries SOCKS5 streams through the censor (server and client ends)."""


@tunnel.command()
@_key_option
def key(key_file: Path) -> None:
    """Print this end's public key (the server needs it to allow a client)."""
    click.echo(load_or_create_key(key_file).public.hex())


@tunnel.command()
@click.option("--listen", default="127.0.0.1:8443", show_default=True, callback=_endpoint,
              metavar="HOST:PORT", help="Where to listen.")
@_key_option
@_transport_option
@click.option("--allow-client", "allow_clients", multiple=True, metavar="HEX",
              help="A client public key to serve (repeatable).")
@click.option("--clients", "clients_file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file of client public keys, one hex key per line.")
@click.option("--allow", multiple=True, metavar="DEST",
              help="An onward destination clients may reach: IP, CIDR, IP:PORT or CIDR:PORT "
                   "(repeatable; nothing is allowed by default).")
@click.option("--cover-sni", default=DEFAULT_SNI, show_default=True,
              help="tls: the cover site name on the certificate.")
def server(listen: Endpoint, key_file: Path, transport: str,
           allow_clients: tuple[str, ...], clients_file: Path | None, allow: tuple[str, ...],
           cover_sni: str) -> None:
    """Run the tunnel server: authenticated clients only, onward to allowed destinations.

    The first messages it answered are kept in KEY.replay beside the key file,
    so a handshake recorded before a restart gets no answer after it.
    """
    clients = [parse_hex_key(text, KEY_SIZE, "--allow-client") for text in allow_clients]
    if clients_file is not None:
        clients += read_client_keys(clients_file)
    if not clients:
        raise click.UsageError("no client may connect: give --allow-client or --clients")
    config: TunnelServerConfig = _config(
        TunnelServerConfig, static=load_or_create_key(key_file), transport=transport,
        listen_host=listen[0], listen_port=listen[1], clients=clients, allow=list(allow),
        cover_sni=cover_sni, replay_file=key_file.with_name(key_file.name + ".replay"),
    )

    async def run() -> None:
        async with TunnelServer(config) as running:
            host, port = running.address
            print(f"tunnel server ({config.transport}) on {host}:{port}, "
                  f"key {running.public_key.hex()}", file=sys.stderr, flush=True)
            await running.serve_forever()

    tune_allocator()
    run_until_interrupted(run())


def _client_config(server_address: Endpoint, server_key: str, key_file: Path,
                   transport: str, sni: str, **extra: Any) -> TunnelClientConfig:
    config: TunnelClientConfig = _config(
        TunnelClientConfig, static=load_or_create_key(key_file),
        server_host=server_address[0], server_port=server_address[1],
        server_key=parse_hex_key(server_key, KEY_SIZE, "--server-key"),
        transport=transport, sni=sni, **extra,
    )
    return config


@tunnel.command()
@_client_options
@click.option("--socks", default="127.0.0.1:1081", show_default=True, callback=_endpoint,
              metavar="HOST:PORT", help="Where the local SOCKS5 entry listens.")
@click.option("--wait", "patience", default=120.0, show_default=True,
              type=click.FloatRange(0, 86400), metavar="SECONDS",
              help="How long to keep retrying a tunnel server that is not up yet (pauses "
                   "doubling from 0.5 s to 10 s, each attempt reported on stderr); 0: try once.")
def client(server_address: Endpoint, server_key: str, key_file: Path, transport: str,
           socks: Endpoint, sni: str, patience: float) -> None:
    """Run the tunnel client: a local SOCKS5 entry whose streams go through the tunnel.

    It first connects to the server (retrying for up to --wait seconds), then
    serves SOCKS5 and reopens the tunnel whenever a request finds it broken.
    """
    config = _client_config(server_address, server_key, key_file, transport, sni,
                            socks_host=socks[0], socks_port=socks[1])

    def report(line: str) -> None:
        print(f"tunnel client: {line}", file=sys.stderr, flush=True)

    async def run() -> None:
        async with TunnelClient(config) as running:
            # The entry is announced once the tunnel is up (or the client gives up, one line).
            await running.wait_for_session(patience, report)
            host, port = running.socks_address
            print(f"tunnel client ({config.transport}): SOCKS5 on {host}:{port}, "
                  f"key {config.static.public.hex()}", file=sys.stderr, flush=True)
            await running.serve_forever()

    tune_allocator()
    run_until_interrupted(run())


@tunnel.command()
@_client_options
@click.option("--connections", default=200, show_default=True, type=click.IntRange(1, 100000))
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 600),
              help="Seconds an attempt may take before it counts as blocked.")
@click.option("--spread-sources", is_flag=True,
              help="Connect each attempt from its own 127.x address (residual blocking "
                   "then cannot carry over between attempts).")
@json_option
def measure(server_address: Endpoint, server_key: str, key_file: Path, transport: str,
            sni: str, connections: int, timeout: float, spread_sources: bool,
            as_json: bool) -> None:
    """Open N fresh tunnel connections and count how many get blocked."""
    config = _client_config(server_address, server_key, key_file, transport, sni)
    sources = loopback_sources(connections) if spread_sources else None
    result = asyncio.run(measure_blocking(config, connections, timeout, sources=sources))
    if as_json:
        click.echo(json.dumps(result.as_json()))
        return
    failures = ", ".join(f"{kind} {count}" for kind, count in sorted(result.failures.items()))
    click.echo(f"{result.transport}: {result.blocked}/{result.attempted} blocked "
               f"({result.fraction:.1%}){': ' + failures if failures else ''}")
