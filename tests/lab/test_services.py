"""The lab's services: messenger + censor on loopback, the timeline on the simulated clock."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from noisewall import socks5
from noisewall.clock import ManualClock
from noisewall.lab.addressplan import LOOPBACK_PLAN
from noisewall.lab.scenario import resolve_scenario
from noisewall.lab.services import LabServices
from noisewall.records.endpoint import Endpoint


async def _tls_handshake(socks: tuple[str, int], host: str, port: int,
                         server_name: str | None) -> str:
    """'ok' or the failure of a TLS handshake to host:port through the censor."""
    try:
        async with asyncio.timeout(5):
            _, writer = await socks5.open_connection(Endpoint(*socks), host, port)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # the lab's media certificate is self-signed
            await writer.start_tls(context, server_hostname=server_name)
            writer.close()
            return "ok"
    except (ConnectionError, ssl.SSLError, OSError) as exc:
        return type(exc).__name__


async def test_censor_follows_the_timeline_on_the_simulated_clock(tmp_path: Path) -> None:
    scenario = resolve_scenario("china-2017")
    media_rule = scenario.policy.rules[0]
    assert media_rule.name == "media-blocked" and media_rule.active[0].start is not None
    onset = media_rule.active[0].start
    clock = ManualClock(scenario.start)
    name = scenario.media_name
    assert name == "mmg.whatsapp.net"
    async with LabServices(tmp_path, scenario.policy, clock, media_name=name) as services:
        assert services.addresses is not None
        assert services.addresses.media_name == name
        gateway = services.addresses.censored_socks
        assert gateway is not None
        socks = (gateway.host, gateway.port)
        media_port = int(services.addresses.media_url.rsplit(":", 1)[1])
        assert services.addresses.media_url.startswith(f"https://{LOOPBACK_PLAN.media}:")
        assert await _tls_handshake(socks, LOOPBACK_PLAN.media, media_port, name) == "ok"
        clock.set(onset - 1)
        assert await _tls_handshake(socks, LOOPBACK_PLAN.media, media_port, name) == "ok"
        clock.set(onset)
        assert await _tls_handshake(socks, LOOPBACK_PLAN.media, media_port, name) != "ok"
        clock.set(scenario.end - 1)
        assert await _tls_handshake(socks, LOOPBACK_PLAN.media, media_port, name) != "ok"
        # The rule matches the name the client sends, not the address it reaches.
        assert await _tls_handshake(socks, LOOPBACK_PLAN.media, media_port, None) == "ok"
        assert await _tls_handshake(socks, LOOPBACK_PLAN.media, media_port, "cdn.example") == "ok"
        # the uncensored path to the same server stays open
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(LOOPBACK_PLAN.media, media_port), 5)
        writer.close()
    # everything stopped: nothing listens any more
    for endpoint in (gateway, services.addresses.chat):
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(endpoint.host, endpoint.port), 5)
        except OSError:
            continue
        w.close()
        raise AssertionError(f"{endpoint} still accepts connections after the lab stopped")


async def test_reseeding_makes_draws_a_function_of_seed_and_round(tmp_path: Path) -> None:
    scenario = resolve_scenario("china-2017")
    async with LabServices(tmp_path, scenario.policy, ManualClock(scenario.start)) as services:
        services.reseed(7, 3)
        first = [services.rng.random() for _ in range(5)]
        services.reseed(7, 4)
        other = [services.rng.random() for _ in range(5)]
        services.reseed(7, 3)
        again = [services.rng.random() for _ in range(5)]
    assert first == again and first != other
