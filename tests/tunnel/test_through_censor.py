"""The tunnel against the real censor (in-process middlebox, YAML policies).

* china-2017: media TLS reset and NoiseSocket text blocked: the messenger's
  direct text and media fail, and both work through the ``tls`` tunnel.
* the GFW's fully-encrypted rule (26% inspected, drop, 180 s residual): over
  200 fresh connections each, ``random`` is blocked at about the inspected
  fraction and ``noisesocket-padded`` and ``tls`` are never blocked.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import random
import ssl
from pathlib import Path

import pytest

from noisewall import socks5
from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import parse_policy
from noisewall.clock import ManualClock
from noisewall.messenger.client import MessengerClient
from noisewall.records.endpoint import Endpoint
from noisewall.tunnel.armsrace import loopback_sources, measure_blocking
from noisewall.tunnel.client import TunnelClient
from noisewall.tunnel.server import TunnelServer
from tests.messenger.test_paths import Server
from tests.tunnel.conftest import Keys, client_config, server_config

CONNECTIONS = 200
INSPECTED = 0.26

CHINA_2017 = """
description: china-2017-like (media over TLS reset; NoiseSocket text blocked)
rules:
  - name: media-tls
    match: {{protocol: tls, port: {media}}}
    action: reset
  - name: noisesocket-text
    match: {{protocol: [noisesocket, wa]}}
    action: reset
"""

FULLY_ENCRYPTED = f"""
description: the GFW's fully-encrypted rule (Wu et al. 2023)
rules:
  - name: fet
    match: {{fully_encrypted: true}}
    action: drop
    probability: {INSPECTED}
    residual: 180
"""


@pytest.mark.slow
async def test_china_2017_direct_fails_and_the_tls_tunnel_carries_text_and_media(
    tmp_path: Path, keys: Keys
) -> None:
    server = Server(tmp_path / "server")
    await server.start()
    try:
        policy = parse_policy(CHINA_2017.format(media=server.media_port), "china-2017.yaml")
        log = io.StringIO()
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(os.urandom(200_000))
        # Accounts exist from before the blocking.
        async with MessengerClient.open(tmp_path / "bob") as bob:
            await bob.register("bob", server.address)
        async with MessengerClient.open(tmp_path / "alice") as alice:
            await alice.register("alice", server.address)
            await alice.send_text("bob", "before the blocking")  # the E2E session exists
        async with Middlebox(lambda: policy, decision_log=log) as censor:
            gateway = await censor.add_socks(Endpoint("127.0.0.1", 0))
            # Direct (through the censor's gateway): text stays queued...
            async with MessengerClient.open(tmp_path / "alice",
                                            socks5=gateway) as alice:
                blocked_id = await alice.send_text("bob", "written under blocking")
                assert alice.queued(blocked_id)
            # ...and the media server's TLS handshake is reset.
            _, writer = await asyncio.wait_for(socks5.open_connection(
                gateway, "127.0.0.1", server.media_port), 5)
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
                await asyncio.wait_for(writer.start_tls(context), 5)
            writer.close()

            # Through the tls tunnel: the tunnel server sits behind a censor route.
            allow = [f"127.0.0.1:{server.chat_port}", f"127.0.0.1:{server.media_port}"]
            async with TunnelServer(server_config(keys, "tls", allow)) as tunnel_server:
                host, port = tunnel_server.address
                route = await censor.add_route(Route(Endpoint("127.0.0.1", 0),
                                                     Endpoint(host, port)))
                config = client_config(keys, "tls", (route.host, route.port))
                async with TunnelClient(config) as tunnel, MessengerClient.open(
                    tmp_path / "alice", socks5=tunnel.socks_address
                ) as alice:
                    text_id = await alice.send_text("bob", "through the tunnel")
                    photo_id = await alice.send_media("bob", "photo", photo)
                    assert not alice.queued(blocked_id) and not alice.queued(text_id)
        async with MessengerClient.open(tmp_path / "bob") as bob:
            received = {item.entry.msg_id: item for item in await bob.receive(wait=2)}
    finally:
        await server.stop()
    assert received[blocked_id].entry.body["text"] == "written under blocking"
    assert received[text_id].entry.body["text"] == "through the tunnel"
    media = received[photo_id].media_path
    assert media is not None and media.read_bytes() == photo.read_bytes()
    decisions = [json.loads(line) for line in log.getvalue().splitlines()]
    direct = [d for d in decisions if d["server"] != f"127.0.0.1:{port}"]
    assert {(d["protocol"], d["rule"]) for d in direct} >= {
        ("noisesocket", "noisesocket-text"), ("tls", "media-tls")}
    assert all(d["effect"] == "reset" for d in direct)
    tunnelled = [d for d in decisions if d["server"] == f"127.0.0.1:{port}"]
    assert tunnelled and all(d["protocol"] == "tls" and d["effect"] == "allow"
                             for d in tunnelled)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["random", "noisesocket-padded", "tls"])
async def test_fully_encrypted_rule_blocks_random_at_the_inspected_fraction_only(
    keys: Keys, transport: str
) -> None:
    policy = parse_policy(FULLY_ENCRYPTED, "fet.yaml")
    log = io.StringIO()
    clock = ManualClock(1_500_000_000.0)
    config = MiddleboxConfig(classify_timeout=0.5, idle_timeout=30)
    tunnel = TunnelServer(server_config(keys, transport, [], handshake_timeout=5.0))
    async with Middlebox(lambda: policy, clock=clock, rng=random.Random(2017),
                         decision_log=log, config=config) as censor, tunnel as server:
        route = await censor.add_route(Route(Endpoint("127.0.0.1", 0),
                                             Endpoint(*server.address)))
        result = await measure_blocking(
            client_config(keys, transport, (route.host, route.port)), CONNECTIONS,
            timeout=3.0, sources=loopback_sources(CONNECTIONS),
        )
    decisions = [json.loads(line) for line in log.getvalue().splitlines()]
    assert len(decisions) == CONNECTIONS
    assert not any(d["residual"] for d in decisions)  # one source address per attempt
    dropped = sum(d["effect"] == "drop" for d in decisions)
    print(f"\n{transport}: {result.blocked}/{result.attempted} blocked "
          f"({result.fraction:.1%}), censor dropped {dropped}, failures {result.failures}")
    if transport == "random":
        assert sum(d["fully_encrypted"] for d in decisions) >= 0.97 * CONNECTIONS
        sigma = math.sqrt(CONNECTIONS * INSPECTED * (1 - INSPECTED))
        assert abs(result.blocked - CONNECTIONS * INSPECTED) <= 4 * sigma
        assert result.blocked == dropped  # every drop, and nothing else, failed
    else:
        assert not any(d["fully_encrypted"] for d in decisions)
        assert result.blocked == 0 and dropped == 0
