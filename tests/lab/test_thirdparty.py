"""shadowsocks-libev, unmodified, through the censor: the fully-encrypted rule, per flow."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import socket
from collections.abc import AsyncIterator

import pytest

from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import parse_policy
from noisewall.clock import ManualClock
from noisewall.lab.thirdparty import SHADOWSOCKS, Shadowsocks
from noisewall.records.endpoint import Endpoint
from tests.netns import require_program


@pytest.fixture(autouse=True)
def _shadowsocks() -> None:
    require_program("ss-server", "shadowsocks-libev")
    require_program("ss-local", "shadowsocks-libev")

CONNECTIONS = 200
INSPECTED = 0.26
# No residual here: every attempt leaves ss-local from 127.0.0.1, so a residual block on
# (client, server, port) would turn one hit into blocking all; this measures the per-flow rule.
FULLY_ENCRYPTED = f"""
rules:
  - name: fet
    match: {{fully_encrypted: true}}
    action: drop
    probability: {INSPECTED}
"""
ALLOW = "rules: [{action: allow}]"


@pytest.fixture
async def echo() -> AsyncIterator[Endpoint]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def _through_censor(policy_yaml: str, echo: Endpoint) -> tuple[int, list[dict[str, object]]]:
    policy = parse_policy(policy_yaml, "fet.yaml")
    log = io.StringIO()
    config = MiddleboxConfig(classify_timeout=0.5, idle_timeout=30)
    async with Middlebox(lambda: policy, clock=ManualClock(1_636_156_800.0),
                         rng=random.Random(2021), decision_log=log, config=config) as censor:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            server = Endpoint("127.0.0.1", free.getsockname()[1])
        route = await censor.add_route(Route(Endpoint("127.0.0.1", 0), server))
        async with Shadowsocks(server, Endpoint("127.0.0.1", 0), entry=route,
                               timeout=3) as tunnel:
            result = await tunnel.measure(echo, CONNECTIONS, timeout=3.0)
    assert result.transport == SHADOWSOCKS and result.attempted == CONNECTIONS
    decisions = [json.loads(line) for line in log.getvalue().splitlines()]
    return result.blocked, decisions


@pytest.mark.slow
async def test_fully_encrypted_rule_blocks_shadowsocks_at_the_inspected_fraction(
        echo: Endpoint) -> None:
    blocked, decisions = await _through_censor(FULLY_ENCRYPTED, echo)
    assert len(decisions) == CONNECTIONS
    # Random bytes meet an exemption now and then (Ex2: six printable bytes first, ...).
    caught = sum(bool(d["fully_encrypted"]) for d in decisions)
    assert caught >= 0.95 * CONNECTIONS
    dropped = sum(d["effect"] == "drop" for d in decisions)
    sigma = math.sqrt(caught * INSPECTED * (1 - INSPECTED))
    assert abs(blocked - caught * INSPECTED) <= 4 * sigma
    assert blocked == dropped


async def test_shadowsocks_carries_everything_when_allowed(echo: Endpoint) -> None:
    blocked, decisions = await _through_censor(ALLOW, echo)
    assert blocked == 0
    assert len(decisions) == CONNECTIONS
