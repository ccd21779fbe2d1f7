"""Shared pieces of the tunnel tests: keys, an echo destination, a tunnel pair."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from noisewall.noise.dh import KeyPair, dh_function
from noisewall.tunnel.client import TunnelClient
from noisewall.tunnel.config import TunnelClientConfig, TunnelServerConfig
from noisewall.tunnel.server import TunnelServer


@dataclass
class Keys:
    server: KeyPair
    client: KeyPair
    stranger: KeyPair


@pytest.fixture
def keys() -> Keys:
    dh = dh_function("25519")
    return Keys(dh.generate_keypair(), dh.generate_keypair(), dh.generate_keypair())


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def server_config(keys: Keys, transport: str, allow: list[str], **extra: Any) -> TunnelServerConfig:
    return TunnelServerConfig(static=keys.server, transport=transport,  # type: ignore[arg-type]
                              clients=[keys.client.public], allow=allow, **extra)


def client_config(keys: Keys, transport: str, address: tuple[str, int],
                  **extra: Any) -> TunnelClientConfig:
    values: dict[str, Any] = {"static": keys.client, "server_host": address[0],
                              "server_port": address[1], "server_key": keys.server.public,
                              "transport": transport, "socks_port": 0, "connect_timeout": 5.0}
    values.update(extra)
    return TunnelClientConfig(**values)


@asynccontextmanager
async def tunnel_pair(keys: Keys, transport: str, allow: list[str],
                      **server_extra: Any) -> AsyncIterator[tuple[TunnelServer, TunnelClient]]:
    """A running server and a client connected straight to it."""
    async with TunnelServer(server_config(keys, transport, allow, **server_extra)) as server:
        client = TunnelClient(client_config(keys, transport, server.address))
        async with client:
            yield server, client
