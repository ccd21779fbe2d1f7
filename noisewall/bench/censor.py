"""``noisewall bench censor``: relay throughput, new-flow rate and capture classification rate.

* Throughput: one TCP stream of bulk data from a client to a sink, directly on
  loopback and through an allow route of a real ``noisewall censor`` process
  (which hands allowed flows to the kernel), alternating rounds in the same
  run; the ratio is the figure. A second censor started with
  ``--copy-relay`` shows what copying through Python would cost.
* New flows: connections per second that the middlebox accepts, classifies
  (each sends a real first message: a TLS ClientHello, an HTTP request or a
  NoiseSocket handshake), decides and relays to an echo server; the baseline
  is the same clients connecting to the echo server directly.
* In the path (as root, where network namespaces can be made): the same two
  figures between the inside and outside namespaces of a lab network of the
  benchmark's own, through ``noisewall censor --net`` (nftables redirect,
  allow path, kernel relay) against plain kernel forwarding by the same
  border, rounds alternating with and without the censor.
* Capture: packets per second through ``censor classify`` (read, reassemble,
  classify) on a capture the benchmark writes itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import dpkt

from noisewall.allocator import MALLOC_ENV
from noisewall.bench.kit import BenchResult, ServingChild, module_argv, time_bulk_send
from noisewall.censor.flowclassifier import classify_flow
from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.pcap import read_flows
from noisewall.censor.policy import Policy, parse_policy
from noisewall.net import NetError, Network, Side, add_host, entered, run_argv, temporary_network
from noisewall.records.endpoint import Endpoint


def client_hello(server_name: str = "example.org") -> bytes:
    """A real TLS ClientHello from Python's ``ssl`` (SNI ``server_name``, ALPN h2), no socket."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


FIRST_MESSAGES = (
    b"GET / HTTP/1.1\r\nHost: media.example\r\n\r\n",
    (28).to_bytes(2, "big") + b"Noise_XX_25519_AESGCM_SHA256" + (32).to_bytes(2, "big")
    + bytes(range(32)),
)
BULK = 64 * 1024 * 1024
CHUNK = 256 * 1024


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(CHUNK):
        pass
    writer.write(b"k")
    await writer.drain()
    writer.close()


async def _echo_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.read(65536)
    writer.write(data)
    await writer.drain()
    writer.close()


async def _bulk(port: int, size: int, host: str = "127.0.0.1") -> float:
    """Seconds to push ``size`` bytes to the sink behind ``port`` and hear it finished."""
    reader, writer = await asyncio.open_connection(host, port)
    return await time_bulk_send(reader, writer, size, CHUNK)


async def _flows(port: int, count: int, concurrency: int = 50, host: str = "127.0.0.1") -> float:
    """Seconds for ``count`` connections that each send a first message and read the echo."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with semaphore:
            reader, writer = await asyncio.open_connection(host, port)
            message = FIRST_MESSAGES[index % len(FIRST_MESSAGES)]
            writer.write(message)
            await reader.readexactly(len(message))
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - start


async def _best_times(runs: list[Callable[[], Awaitable[float]]], rounds: int) -> list[float]:
    """The best time of each run over ``rounds`` rounds, the runs interleaved in every round."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for index, run in enumerate(runs):
            best[index] = min(best[index], await run())
    return best


def _child(argv: list[str], log: Path, pattern: str = r"port (\d+)") -> ServingChild:
    # The sink and the censor run with glibc's allocator kept out of its
    # page-faulting heap-trim mode, which otherwise made the direct
    # baseline 0.4-0.6 GB/s in some runs and 3+ GB/s in others.
    return ServingChild(argv, log, pattern, env=MALLOC_ENV)


def _censor_child(target_port: int, workdir: Path, name: str, *extra: str) -> ServingChild:
    policy = workdir / "allow.yaml"
    policy.write_text("rules: [{action: allow}]\n")
    return _child(module_argv("noisewall", "censor", "--policy", policy, "--route",
                              f"127.0.0.1:0=127.0.0.1:{target_port}", "--log", os.devnull,
                              *extra),
                  workdir / f"{name}.log", r"route 127\.0\.0\.1:(\d+)")


async def _relay_benchmarks(quick: bool, workdir: Path) -> list[BenchResult]:
    size = BULK // 16 if quick else BULK
    flows = 200 if quick else 3000
    rounds = 2 if quick else 4
    # The sink is a process of its own, so direct and relayed differ only by the relay.
    sink = _child(module_argv(__name__, "sink"), workdir / "sink.log")
    kernel = _censor_child(sink.port, workdir, "censor-kernel")
    copying = _censor_child(sink.port, workdir, "censor-copying", "--copy-relay")
    try:
        direct, relayed, copied = await _best_times(
            [partial(_bulk, port, size) for port in (sink.port, kernel.port, copying.port)],
            rounds)
    finally:
        kernel.stop()
        copying.stop()
        sink.stop()
    results = [
        BenchResult("throughput through an allow route", "MB/s", size / relayed / 1e6,
                    "direct loopback", size / direct / 1e6),
        BenchResult("the same, relay copying through Python (--copy-relay)", "MB/s",
                    size / copied / 1e6, "direct loopback", size / direct / 1e6),
    ]
    server = await asyncio.start_server(_echo_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    censor = _censor_child(port, workdir, "censor-flows")
    try:
        direct, relayed = await _best_times(
            [partial(_flows, port, flows), partial(_flows, censor.port, flows)], rounds)
    finally:
        censor.stop()
        server.close()
        await server.wait_closed()
    results.append(BenchResult("new flows classified and relayed", "flows/s", flows / relayed,
                               "the same connections, direct", flows / direct))
    return results


def _outside_server(network: Network, kind: str, address: str, workdir: Path) -> ServingChild:
    """A sink or an echo server in the lab network's outside namespace, on ``address``."""
    argv = run_argv(network, Side.OUTSIDE, module_argv(__name__, kind, address))
    return _child(argv, workdir / f"outside-{kind}.log")


async def _with_and_without(network: Network, policy: Path, rounds: int,
                            run: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    """Best seconds of ``run`` with plain forwarding and through the in-path censor, alternating."""
    forwarded = censored = float("inf")
    for _ in range(rounds):
        forwarded = min(forwarded, await run())
        censor = _child(module_argv("noisewall", "censor", "--policy", policy, "--net",
                                    network.name, "--log", os.devnull),
                        policy.with_name("censor-inpath.log"), r"TCP to \S+:(\d+)")
        try:
            censored = min(censored, await run())
        finally:
            censor.stop()
    return forwarded, censored


async def _inpath_benchmarks(network: Network, quick: bool, workdir: Path) -> list[BenchResult]:
    size = BULK // 16 if quick else BULK
    flows = 200 if quick else 3000
    rounds = 2 if quick else 3
    policy = workdir / "allow.yaml"
    policy.write_text("rules: [{action: allow}]\n")
    address = str(add_host(network, "sink.lab"))
    sink = _outside_server(network, "sink", address, workdir)
    echo = _outside_server(network, "echo", address, workdir)
    try:
        with entered(network.namespace(Side.INSIDE)):  # the clients' sockets are the users'
            direct, relayed = await _with_and_without(
                network, policy, rounds, partial(_bulk, sink.port, size, address))
            flows_direct, flows_relayed = await _with_and_without(
                network, policy, rounds, partial(_flows, echo.port, flows, host=address))
    finally:
        sink.stop()
        echo.stop()
    return [
        BenchResult("in the path: throughput through the censor's allow path", "MB/s",
                    size / relayed / 1e6, "plain kernel forwarding", size / direct / 1e6),
        BenchResult("in the path: new flows redirected, classified and relayed", "flows/s",
                    flows / flows_relayed, "plain kernel forwarding", flows / flows_direct),
    ]


def _inpath_section(quick: bool, workdir: Path) -> list[BenchResult]:
    """The in-path figures on a lab network of their own, or none where one cannot be made."""
    if os.geteuid() != 0:
        print("in-path benchmarks skipped: they need root (network namespaces)", file=sys.stderr)
        return []
    name = "b" + secrets.token_hex(3)
    try:
        with temporary_network(name) as network:
            return asyncio.run(_inpath_benchmarks(network, quick, workdir))
    except NetError as exc:
        print(f"in-path benchmarks skipped: {exc}", file=sys.stderr)
        return []


def write_benchmark_capture(path: Path, flows: int) -> int:
    """A pcap of ``flows`` short TCP flows (handshake, first message, data, FIN).

    Returns the number of packets written.
    """
    payloads = (client_hello(), *FIRST_MESSAGES)
    packets = 0
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out, linktype=dpkt.pcap.DLT_EN10MB)
        for index in range(flows):
            client_port = 10000 + index % 50000
            client_ip = bytes((10, 0, (index >> 8) & 0xFF, index & 0xFF))
            first = payloads[index % len(payloads)]
            segments = [(True, 0x02, b""), (False, 0x12, b""), (True, 0x10, b""),
                        (True, 0x18, first), (False, 0x18, b"x" * 600), (True, 0x10, b""),
                        (False, 0x18, b"y" * 600), (True, 0x11, b""), (False, 0x11, b"")]
            seq = {True: 1000, False: 5000}
            for from_client, flags, data in segments:
                tcp = dpkt.tcp.TCP(
                    sport=client_port if from_client else 443,
                    dport=443 if from_client else client_port,
                    seq=seq[from_client], flags=flags, data=data,
                )
                seq[from_client] += len(data) + (1 if flags & 0x03 else 0)
                ip = dpkt.ip.IP(src=client_ip if from_client else b"\x0a\x63\x00\x01",
                                dst=b"\x0a\x63\x00\x01" if from_client else client_ip,
                                p=dpkt.ip.IP_PROTO_TCP, data=tcp)
                frame = dpkt.ethernet.Ethernet(data=ip, type=dpkt.ethernet.ETH_TYPE_IP)
                writer.writepkt(bytes(frame), ts=1_500_000_000 + packets * 1e-4)
                packets += 1
    return packets


def _capture_benchmark(quick: bool, workdir: Path) -> BenchResult:
    path = workdir / "bench.pcap"
    packets = write_benchmark_capture(path, 500 if quick else 10000)
    best = float("inf")
    for _ in range(2 if quick else 3):
        start = time.perf_counter()
        for flow in read_flows(path):
            classify_flow(flow.client, flow.server, flow.client_data,
                          flow.first_client_segment, flow.server_data)
        best = min(best, time.perf_counter() - start)
    # Baseline: dpkt parsing every frame down to TCP, nothing else.
    base = float("inf")
    for _ in range(2 if quick else 3):
        start = time.perf_counter()
        with path.open("rb") as raw:
            for _, frame in dpkt.pcap.Reader(raw):
                _ = dpkt.ethernet.Ethernet(frame).data.data
        base = min(base, time.perf_counter() - start)
    return BenchResult("capture read + reassemble + classify", "packets/s",
                       packets / best, "dpkt parse to TCP only", packets / base)


#: Ten rules of every kind of condition; no flow of :func:`_unmatched_flows` matches any,
#: so each decision evaluates all of them (the worst case).
DECISION_POLICY = """\
rules:
  - {name: tw-sni, match: {sni: ["*.twitter.com", twitter.com, "re:(^|\\\\.)t\\\\.co$"]},
     action: {kind: throttle, rate_kbps: 130}}
  - {name: tw-host, match: {protocol: http, host: ["*.twitter.com", twitter.com]}, action: reset}
  - {name: wa-chat, match: {protocol: [noisesocket, wa], port: [443, 5222]}, action: drop,
     active: [{from: 2017-09-20, until: 2017-10-18}]}
  - {name: wa-media, match: {sni: ["*.cdn.whatsapp.net", "mmg*.whatsapp.net"]}, action: reset,
     active: [{from: 2017-07-17}]}
  - {name: ja3, match: {ja3: [e7d705a3286e19ea42f587b344ee6865, 6734f37431670b3ab4292b8f60f29984]},
     action: reset}
  - {name: ja4, match: {ja4: "t13d1516h2_*"}, action: {kind: delay, ms: 200}}
  - {name: ssh, match: {protocol: ssh, port: "22-2222"}, action: {kind: flaky, fail: 0.3}}
  - {name: ranges, match: {server: [203.0.113.0/24, 198.51.100.0/24, "2001:db8::/32"],
     port: "1-1024"}, action: drop}
  - {name: fet, match: {fully_encrypted: true, server: [10.0.0.0/8, 172.16.0.0/12]},
     action: drop, probability: 0.26, residual: 180}
  - {name: example, match: {sni: "re:\\\\.example$"}, action: {kind: delay, ms: 50}}
"""


def _unmatched_flows(count: int = 1000) -> list[FlowRecord]:
    return [FlowRecord(Endpoint(f"192.168.{i % 250}.{i % 200 + 1}", 40000 + i),
                       Endpoint(f"10.{i % 7}.{i % 13}.{i % 250 + 1}", 8443), protocol="tls",
                       sni=f"host{i}.example.org", ja3="0" * 32,
                       ja4="t13d0000h2_000000000000_000000000000")
            for i in range(count)]


def _decision_benchmark(quick: bool) -> BenchResult:
    """Policy decisions per second: ten rules that all miss, against one allow-all rule."""
    flows = _unmatched_flows()
    now = datetime(2017, 9, 20, tzinfo=UTC).timestamp()
    count = 20_000 if quick else 200_000

    def rate(policy: Policy) -> float:
        rng = random.Random(1)  # noqa: S311 - the policy's dice, seeded for a repeatable run
        start = time.perf_counter()
        for k in range(count):
            policy.decide(flows[k % len(flows)], now, rng)
        return count / (time.perf_counter() - start)

    ten, one = parse_policy(DECISION_POLICY, "ten-rules"), parse_policy(
        "rules: [{action: allow}]", "allow-all")
    ours = base = 0.0
    for _ in range(2 if quick else 3):
        ours, base = max(ours, rate(ten)), max(base, rate(one))
    return BenchResult("policy decisions, 10 rules all evaluated (none matches)", "decisions/s",
                       ours, "one allow-all rule", base)


def run_censor_benchmarks(quick: bool = False) -> list[BenchResult]:
    """Run every censor benchmark; ``quick`` shrinks the work for smoke tests."""
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-") as tmp:
        workdir = Path(tmp)
        results = asyncio.run(_relay_benchmarks(quick, workdir))
        results.extend(_inpath_section(quick, workdir))
        results.append(_capture_benchmark(quick, workdir))
        results.append(_decision_benchmark(quick))
    return results


_SERVERS = {"sink": _sink, "echo": _echo_once}


async def _serve(kind: str, host: str) -> None:
    server = await asyncio.start_server(_SERVERS[kind], host, 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__" and sys.argv[1:2] in (["sink"], ["echo"]):
    asyncio.run(_serve(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"))
