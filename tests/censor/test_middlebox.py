"""Each censor action, end to end through the real middlebox on loopback."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import json
import logging
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

import pytest

from noisewall import socks5
from noisewall.bench.censor import client_hello
from noisewall.bench.kit import rss
from noisewall.censor.metrics import CensorMetrics
from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import Policy, parse_policy
from noisewall.clock import ManualClock
from noisewall.noise import NoiseSettings, dh_function
from noisewall.noise.stream import NoiseServer, connect
from noisewall.records.endpoint import Endpoint
from tests.censor.capture import HTTP_REQUEST, http_echo_works

NOISE_FIRST = (28).to_bytes(2, "big") + b"Noise_XX_25519_AESGCM_SHA256" + (32).to_bytes(2, "big")


async def _backend(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                   ) -> asyncio.Server:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(wrapped, "127.0.0.1", 0)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def source(size: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        payload = os.urandom(size)
        for offset in range(0, size, 16384):
            writer.write(payload[offset : offset + 16384])
            await writer.drain()
        writer.write_eof()

    return send


class Censor:
    """A middlebox with one route to a backend, and its decision log."""

    def __init__(self, middlebox: Middlebox, entry: Endpoint, log: io.StringIO) -> None:
        self.middlebox = middlebox
        self.entry = entry
        self._log = log

    def decisions(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self._log.getvalue().splitlines()]

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.entry.host, self.entry.port)


async def start_censor(
    policy_yaml: str, backend: asyncio.Server, clock: ManualClock | None = None,
    config: MiddleboxConfig | None = None, seed: int = 1,
) -> Censor:
    policy: Policy = parse_policy(policy_yaml, "test-policy.yaml")
    log = io.StringIO()
    middlebox = Middlebox(lambda: policy, clock=clock or ManualClock(1_500_000_000),
                          rng=random.Random(seed), decision_log=log, config=config)
    target = Endpoint("127.0.0.1", backend.sockets[0].getsockname()[1])
    entry = await middlebox.add_route(Route(Endpoint("127.0.0.1", 0), target))
    return Censor(middlebox, entry, log)


@pytest.fixture
async def echo_backend() -> AsyncIterator[asyncio.Server]:
    server = await _backend(echo)
    async with server:
        yield server


async def test_allow_relays_both_ways(echo_backend: asyncio.Server) -> None:
    censor = await start_censor("rules: [{action: allow}]", echo_backend)
    async with censor.middlebox:
        reader, writer = await censor.open()
        writer.write(HTTP_REQUEST)
        assert await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5) == HTTP_REQUEST
        writer.close()
    [decision] = censor.decisions()
    assert decision["protocol"] == "http" and decision["host"] == "media.example"
    assert decision["effect"] == "allow"
    assert censor.middlebox.kernel_relayed == 0  # a short exchange is cheaper to copy


async def test_a_flow_handed_to_the_kernel_at_once_still_echoes_and_half_closes(
    echo_backend: asyncio.Server,
) -> None:
    censor = await start_censor("rules: [{action: allow}]", echo_backend,
                                config=MiddleboxConfig(kernel_relay_after=0))
    async with censor.middlebox:
        reader, writer = await censor.open()
        for message in (HTTP_REQUEST, b"after the hand-over", os.urandom(300_000)):
            writer.write(message)
            assert await asyncio.wait_for(reader.readexactly(len(message)), 5) == message
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # the backend's EOF came back
        writer.close()
        assert censor.middlebox.kernel_relayed == 1


async def _digest_then_send(size: int, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
    """Read the client's bytes to EOF, answer with their SHA-256 and ``size`` random bytes."""
    digest = hashlib.sha256()
    while data := await reader.read(1 << 20):
        digest.update(data)
    writer.write(digest.digest())
    payload = os.urandom(size)
    writer.write(payload)
    await writer.drain()
    writer.write(hashlib.sha256(payload).digest())
    writer.write_eof()


@pytest.mark.parametrize("kernel_relay", [True, False], ids=["kernel-relay", "copy-relay"])
async def test_allowed_bulk_both_ways_with_half_close(kernel_relay: bool) -> None:
    backend = await _backend(partial(_digest_then_send, 6 << 20))
    metrics = CensorMetrics()
    async with backend:
        policy = parse_policy("rules: [{action: allow}]", "p.yaml")
        async with Middlebox(lambda: policy, metrics=metrics,
                             config=MiddleboxConfig(kernel_relay=kernel_relay)) as middlebox:
            entry = await middlebox.add_route(Route(
                Endpoint("127.0.0.1", 0),
                Endpoint("127.0.0.1", backend.sockets[0].getsockname()[1])))
            reader, writer = await asyncio.open_connection(entry.host, entry.port)
            upload = HTTP_REQUEST + os.urandom(20 << 20)
            writer.write(upload)
            await writer.drain()
            writer.write_eof()  # the backend answers after our half-close reaches it
            async with asyncio.timeout(60):
                answer = await reader.read(-1)
            writer.close()
            assert middlebox.kernel_relayed == int(kernel_relay)
    assert answer[:32] == hashlib.sha256(upload).digest()
    payload = answer[32:-32]
    assert len(payload) == 6 << 20 and answer[-32:] == hashlib.sha256(payload).digest()
    relayed = {sample.labels["direction"]: sample.value
               for family in metrics.registry.collect() for sample in family.samples
               if sample.name == "noisewall_censor_bytes_total"}
    assert relayed == {"upstream": len(upload), "downstream": len(answer)}


async def test_reset_shows_as_connection_reset(echo_backend: asyncio.Server) -> None:
    censor = await start_censor(
        "rules: [{match: {protocol: noisesocket}, action: reset}]", echo_backend
    )
    async with censor.middlebox:
        reader, writer = await censor.open()
        writer.write(NOISE_FIRST + os.urandom(32))
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                await reader.read(100)
                await reader.read(100)  # the RST may follow a zero-length read on some kernels
        writer.close()
    assert censor.decisions()[0]["effect"] == "reset"


async def test_a_first_flight_paused_after_one_byte_is_still_classified(
    echo_backend: asyncio.Server,
) -> None:
    # Issue 19: one byte, a pause longer than the 2 s classify timeout, then the
    # rest used to be decided "unknown" and allowed, whatever the SNI or Host.
    censor = await start_censor(
        "rules: [{name: sni, match: {sni: blocked.example}, action: reset},"
        " {name: host, match: {host: blocked.example}, action: reset},"
        " {name: noise, match: {protocol: noisesocket}, action: reset}]", echo_backend,
    )
    flights = [client_hello("blocked.example"),
               b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n",
               NOISE_FIRST + os.urandom(32)]

    async def paused(flight: bytes) -> None:
        reader, writer = await censor.open()
        writer.write(flight[:1])
        await writer.drain()
        await asyncio.sleep(2.5)
        writer.write(flight[1:])
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(10):
                await reader.read(100)
                await reader.read(100)
        writer.close()

    async with censor.middlebox:
        await asyncio.gather(*(paused(flight) for flight in flights))
    assert sorted((d["rule"], d["effect"]) for d in censor.decisions()) == [
        ("host", "reset"), ("noise", "reset"), ("sni", "reset")]


async def test_drop_shows_as_a_timeout(echo_backend: asyncio.Server) -> None:
    censor = await start_censor("rules: [{match: {fully_encrypted: true}, action: drop}]",
                                echo_backend)
    async with censor.middlebox:
        reader, writer = await censor.open()
        writer.write(bytes(random.Random(3).randbytes(400)))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await reader.read(100)
        writer.close()
    assert censor.decisions()[0]["effect"] == "drop"


async def test_throttle_holds_the_configured_rate() -> None:
    size = 600_000
    backend = await _backend(source(size))
    async with backend:
        censor = await start_censor(
            "rules: [{match: {protocol: http}, action: {kind: throttle, rate_kbps: 2000}}]",
            backend,
        )
        async with censor.middlebox:
            reader, writer = await censor.open()
            writer.write(HTTP_REQUEST)
            first = await asyncio.wait_for(reader.read(65536), 5)
            start = time.monotonic()
            received = len(first)
            while data := await asyncio.wait_for(reader.read(65536), 10):
                received += len(data)
            elapsed = time.monotonic() - start
            writer.close()
    assert received == size
    rate_kbps = (received - len(first)) * 8 / 1000 / elapsed
    assert 2000 * 0.85 <= rate_kbps <= 2000 * 1.15, rate_kbps


async def test_delay_adds_latency_each_way(echo_backend: asyncio.Server) -> None:
    censor = await start_censor(
        "rules: [{match: {protocol: http}, action: {kind: delay, ms: 150}}]", echo_backend
    )
    async with censor.middlebox:
        reader, writer = await censor.open()
        writer.write(HTTP_REQUEST)
        await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5)
        start = time.monotonic()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        round_trip = time.monotonic() - start
        writer.close()
    assert 0.3 <= round_trip < 0.6


async def test_flaky_fails_the_configured_fraction(echo_backend: asyncio.Server) -> None:
    p, flows = 0.3, 250
    censor = await start_censor(
        f"rules: [{{match: {{protocol: http}}, action: {{kind: flaky, fail: {p}}}}}]",
        echo_backend, seed=2024,
    )
    failed = 0
    async with censor.middlebox:

        async def one() -> bool:
            reader, writer = await censor.open()
            try:
                writer.write(HTTP_REQUEST)
                data = await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5)
                return data != HTTP_REQUEST
            except (ConnectionResetError, asyncio.IncompleteReadError):
                return True
            finally:
                writer.close()

        for batch in range(0, flows, 50):
            results = await asyncio.gather(*(one() for _ in range(min(50, flows - batch))))
            failed += sum(results)
    decisions = censor.decisions()
    assert len(decisions) == flows
    # What the clients saw is exactly what the censor decided and logged...
    assert failed == sum(1 for d in decisions if d["effect"] == "reset")
    # ...and that is the configured fraction.
    assert abs(failed / flows - p) <= 0.1 * p, failed / flows


async def test_residual_blocks_retries_inside_the_window_only(echo_backend: asyncio.Server) -> None:
    clock = ManualClock(1_500_000_000)
    censor = await start_censor(
        "rules: [{match: {fully_encrypted: true}, action: reset, residual: 180}]",
        echo_backend, clock=clock,
    )

    async def http_works() -> bool:
        return await http_echo_works(censor.entry.host, censor.entry.port, timeout=3)

    async with censor.middlebox:
        assert await http_works()  # before any hit: plain HTTP passes
        reader, writer = await censor.open()
        writer.write(random.Random(5).randbytes(300))  # trips the fully-encrypted rule
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 3)
        writer.close()
        clock.advance(179)
        assert not await http_works()  # same client -> server:port, inside 180 s
        clock.advance(2)
        assert await http_works()
    effects = [(d["effect"], d["residual"]) for d in censor.decisions()]
    assert effects == [("allow", False), ("reset", False), ("reset", True), ("allow", False)]


async def test_a_reloaded_policy_keeps_the_live_residual_blocks(
        echo_backend: asyncio.Server) -> None:
    text = "rules: [{match: {fully_encrypted: true}, action: reset, residual: 180}]"
    policies = [parse_policy(text, "before.yaml")]
    clock = ManualClock(1_500_000_000)
    middlebox = Middlebox(lambda: policies[-1], clock=clock, rng=random.Random(1))
    target = Endpoint("127.0.0.1", echo_backend.sockets[0].getsockname()[1])
    async with middlebox:
        entry = await middlebox.add_route(Route(Endpoint("127.0.0.1", 0), target))
        reader, writer = await asyncio.open_connection(entry.host, entry.port)
        writer.write(random.Random(5).randbytes(300))  # trips the fully-encrypted rule
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 3)
        writer.close()
        policies.append(parse_policy(text, "after.yaml"))  # as SIGHUP or a changed file does
        clock.advance(60)
        assert not await http_echo_works(entry.host, entry.port, timeout=3)
        clock.advance(121)
        assert await http_echo_works(entry.host, entry.port, timeout=3)


async def test_noisewall_stream_through_an_allow_route() -> None:
    server_key = dh_function("25519").generate_keypair()

    async def handler(stream: object) -> None:
        async for message in stream:  # type: ignore[attr-defined]
            await stream.send(message)  # type: ignore[attr-defined]

    server = NoiseServer(handler, Endpoint("127.0.0.1", 0), NoiseSettings(static=server_key))
    async with server:
        policy = parse_policy("rules: [{match: {protocol: wa}, action: reset}]", "p.yaml")
        log = io.StringIO()
        async with Middlebox(lambda: policy, decision_log=log) as middlebox:
            entry = await middlebox.add_route(
                Route(Endpoint("127.0.0.1", 0), Endpoint("127.0.0.1", server.address.port))
            )
            stream = await connect(entry.host, entry.port,
                                   NoiseSettings(static=dh_function("25519").generate_keypair()))
            async with stream:
                await stream.send(b"through the censor")
                assert await stream.receive(5) == b"through the censor"
        [decision] = [json.loads(line) for line in log.getvalue().splitlines()]
        assert decision["protocol"] == "noisesocket" and decision["effect"] == "allow"


async def test_socks5_gateway_relays_and_refuses_outside_loopback(
    echo_backend: asyncio.Server,
) -> None:
    policy = parse_policy("rules: []", "p.yaml")
    async with Middlebox(lambda: policy) as middlebox:
        gateway = await middlebox.add_socks(Endpoint("127.0.0.1", 0))
        port = echo_backend.sockets[0].getsockname()[1]

        async def socks_connect(host: bytes, atyp: int) -> tuple[int, asyncio.StreamReader,
                                                                 asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(gateway.host, gateway.port)
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(b"\x05\x01\x00" + bytes((atyp,)) + host + port.to_bytes(2, "big"))
            head = await asyncio.wait_for(reader.readexactly(10), 5)
            return head[1], reader, writer

        code, reader, writer = await socks_connect(bytes((127, 0, 0, 1)), 1)
        assert code == socks5.Reply.SUCCEEDED
        writer.write(HTTP_REQUEST)
        assert await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5) == HTTP_REQUEST
        writer.close()
        # 192.0.2.1 (TEST-NET-1) is refused before any connection is attempted.
        code, _, writer = await socks_connect(bytes((192, 0, 2, 1)), 1)
        assert code == socks5.Reply.NOT_ALLOWED
        writer.close()


async def test_garbage_and_half_open_clients_do_not_hurt_others(
    echo_backend: asyncio.Server,
) -> None:
    censor = await start_censor("rules: [{match: {protocol: http}, action: allow}]",
                                echo_backend,
                                config=MiddleboxConfig(idle_timeout=0.5, classify_timeout=0.3))
    async with censor.middlebox:
        idle = [await censor.open() for _ in range(20)]  # connect, send nothing
        for _ in range(20):
            _, writer = await censor.open()
            writer.write(os.urandom(random.randint(1, 5000)))
            writer.close()
        reader, writer = await censor.open()
        writer.write(HTTP_REQUEST)
        assert await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5) == HTTP_REQUEST
        writer.close()
        await asyncio.sleep(1.5)  # idle eviction closes the half-open ones
        assert censor.middlebox.flow_count == 0
        for idle_reader, idle_writer in idle:
            assert await asyncio.wait_for(idle_reader.read(10), 2) == b""
            idle_writer.close()


async def test_flow_table_is_bounded(echo_backend: asyncio.Server) -> None:
    censor = await start_censor("rules: []", echo_backend,
                                config=MiddleboxConfig(max_flows=50, classify_timeout=5))
    async with censor.middlebox:
        clients = [await censor.open() for _ in range(200)]
        await asyncio.sleep(0.3)
        assert censor.middlebox.flow_count <= 50
        for _, writer in clients:
            writer.close()


async def test_ten_thousand_concurrent_flows_stay_bounded(echo_backend: asyncio.Server) -> None:
    # The flood runs in a child process: this sandbox caps every process at 20,000
    # descriptors, and the middlebox needs two per flow it holds.
    max_flows = 4000
    censor = await start_censor(
        "rules: [{match: {fully_encrypted: true}, action: drop}]", echo_backend,
        config=MiddleboxConfig(max_flows=max_flows, classify_timeout=1.0, idle_timeout=60),
    )
    async with censor.middlebox:
        before = rss()
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.censor.flood_client", censor.entry.host,
            str(censor.entry.port), "10000", "3", stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert flood.stdout is not None
            line = await asyncio.wait_for(flood.stdout.readline(), 120)
            assert line.startswith(b"open "), line
            peak_flows = 0
            for _ in range(20):
                peak_flows = max(peak_flows, censor.middlebox.flow_count)
                await asyncio.sleep(0.1)
            grown = rss() - before
            # Still serving: a fresh client gets through while the flood is held open.
            reader, writer = await censor.open()
            writer.write(HTTP_REQUEST)
            assert await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 10) == (
                HTTP_REQUEST
            )
            writer.close()
        finally:
            if flood.returncode is None:
                flood.kill()
            await flood.wait()
        decisions = len(censor.decisions())
    print(f"peak_flows={peak_flows} decisions={decisions} rss_growth_mib={grown / 2**20:.1f}")
    assert 0 < peak_flows <= max_flows
    assert decisions >= 3000  # thousands of flows were classified and decided
    assert grown < 200 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"


def _middlebox_tasks() -> list[asyncio.Task[object]]:
    """Tasks running the censor's code (the middlebox, its kernel relay) that have not finished."""
    return [task for task in asyncio.all_tasks()
            if not task.done() and "noisewall/censor/" in getattr(
                getattr(task.get_coro(), "cr_code", None), "co_filename", "")]


async def test_close_with_live_flows_logs_nothing_and_leaves_no_task(
    echo_backend: asyncio.Server, caplog: pytest.LogCaptureFixture
) -> None:
    censor = await start_censor(
        "rules: [{match: {host: slow.example}, action: {kind: throttle, rate_kbps: 8}},"
        " {action: allow}]", echo_backend)
    slow_request = HTTP_REQUEST.replace(b"media.example", b"slow.example")
    caplog.set_level(logging.ERROR)
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    writers = []
    try:
        async with censor.middlebox:
            allowed, allowed_writer = await censor.open()
            allowed_writer.write(HTTP_REQUEST)
            assert await asyncio.wait_for(allowed.readexactly(len(HTTP_REQUEST)), 5) == HTTP_REQUEST
            throttled, throttled_writer = await censor.open()
            # More than the bucket's burst comes back, so the flow is mid-throttle at close.
            throttled_writer.write(slow_request + bytes(20_000))
            await asyncio.wait_for(throttled.readexactly(1000), 5)
            writers = [allowed_writer, throttled_writer]
            assert censor.middlebox.flow_count == 2
        assert _middlebox_tasks() == []
        for _ in range(5):  # done callbacks of the cancelled tasks run on later iterations
            await asyncio.sleep(0)
        gc.collect()  # "exception was never retrieved" is reported when a task is collected
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
        for writer in writers:
            writer.close()
    assert [d["effect"] for d in censor.decisions()] == ["allow", "throttle"]
    assert errors == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_idle_eviction_of_a_relayed_flow_logs_nothing(
    echo_backend: asyncio.Server, caplog: pytest.LogCaptureFixture
) -> None:
    censor = await start_censor("rules: [{action: allow}]", echo_backend,
                                config=MiddleboxConfig(idle_timeout=0.2))
    caplog.set_level(logging.ERROR)
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        async with censor.middlebox:
            reader, writer = await censor.open()
            writer.write(HTTP_REQUEST)
            assert await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5) == HTTP_REQUEST
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # evicted: closed
            writer.close()
            async with asyncio.timeout(5):
                while _middlebox_tasks() != [censor.middlebox._janitor]:
                    await asyncio.sleep(0.01)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert errors == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
