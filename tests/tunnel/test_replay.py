"""Replay protection across restarts: a handshake recorded before a restart goes unanswered."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from noisewall.tunnel.client import open_session
from noisewall.tunnel.replay import EPHEMERAL_SIZE, ReplayFilter
from noisewall.tunnel.server import TunnelServer
from tests.tunnel.conftest import Keys, client_config, server_config

TIMEOUT = 5


@asynccontextmanager
async def _recording_relay(target: tuple[str, int],
                           recorded: bytearray) -> AsyncIterator[tuple[str, int]]:
    """A relay to ``target`` that keeps every byte a client sends (a censor's recording)."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   keep: bytearray | None) -> None:
        try:
            while data := await reader.read(65536):
                if keep is not None:
                    keep += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        onward_reader, onward_writer = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(reader, onward_writer, recorded),
                             pipe(onward_reader, writer, None))

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        yield str(host), int(port)
    finally:
        server.close()
        await server.wait_closed()


async def _answer_to(address: tuple[str, int], sent: bytes) -> bytes:
    """What the server sends back to ``sent`` before it closes (or within ``TIMEOUT``)."""
    reader, writer = await asyncio.open_connection(*address)
    writer.write(sent)
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), TIMEOUT):
            received += chunk
    except (ConnectionError, TimeoutError):
        pass  # a reset, or a server that answered and now waits for more
    writer.close()
    return received


@pytest.mark.parametrize("transport", ["random", "noisesocket-padded"])
async def test_a_handshake_recorded_before_a_restart_gets_no_answer_after_it(
    keys: Keys, tmp_path: Path, transport: str
) -> None:
    config = server_config(keys, transport, [], refuse_linger=0.5,
                           replay_file=tmp_path / "server.key.replay")
    recorded = bytearray()
    async with TunnelServer(config) as server, _recording_relay(server.address,
                                                               recorded) as relay:
        session = await open_session(client_config(keys, transport, relay))
        await session.close()
    assert recorded  # the genuine client's first flight, as a censor saw it

    async with TunnelServer(config) as restarted:
        assert await _answer_to(restarted.address, bytes(recorded)) == b""
        assert restarted.refused == 1 and restarted.sessions == 0
        # A genuine client is still served by the restarted server.
        session = await open_session(client_config(keys, transport, restarted.address))
        await session.close()
        assert restarted.sessions == 1


def test_the_file_stays_bounded_and_keeps_the_most_recent_keys(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    keys = [os.urandom(EPHEMERAL_SIZE) for _ in range(50)]
    first = ReplayFilter(capacity=8, path=path)
    assert all(first.first_use(key) for key in keys)
    first.close()
    assert path.stat().st_size <= 2 * 8 * EPHEMERAL_SIZE
    second = ReplayFilter(capacity=8, path=path)
    assert not any(second.first_use(key) for key in keys[-8:])
    assert second.first_use(keys[0])  # forgotten: only the most recent ``capacity`` are kept
    second.close()


def test_a_write_cut_short_loses_only_the_partial_key(tmp_path: Path) -> None:
    path = tmp_path / "replay"
    whole = os.urandom(EPHEMERAL_SIZE)
    path.write_bytes(whole + os.urandom(EPHEMERAL_SIZE // 2))
    replay = ReplayFilter(path=path)
    assert not replay.first_use(whole)
    fresh = os.urandom(EPHEMERAL_SIZE)
    assert replay.first_use(fresh)
    replay.close()
    assert path.read_bytes() == whole + fresh


def test_an_unwritable_file_leaves_the_filter_in_memory(tmp_path: Path) -> None:
    replay = ReplayFilter(path=tmp_path / "missing-directory" / "replay")
    key = os.urandom(EPHEMERAL_SIZE)
    assert replay.first_use(key) and not replay.first_use(key)
