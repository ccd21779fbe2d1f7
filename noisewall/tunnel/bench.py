"""``noisewall bench tunnel``: each transport's throughput and round trip vs direct loopback.

Everything runs as separate processes, as in real use: the byte sink (the
censor benchmark's), a ``noisewall tunnel server`` and a ``noisewall tunnel
client`` per transport; this process is the application, pushing bytes
through the client's SOCKS5 entry or straight to the sink. Direct and
tunnelled runs alternate; each row keeps its best round and is compared with
the best direct round of the whole run. The sink runs with glibc malloc
settings (:data:`noisewall.allocator.MALLOC_ENV`) that keep it out of a page-faulting slow
mode which otherwise made the baseline bimodal; the tunnel processes apply
the same settings themselves (``noisewall.allocator``). Round trips
are 64-byte echoes through a fresh connection's stream, median of many.

A second reference shows what the two extra hops cost without any tunnel
work: two plain TCP relays in child processes (the same ``TcpStream`` copy
loop the tunnel uses, no crypto, no mux) between the application and the
sink, measured in the same alternating rounds. A tunnel cannot beat it.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from noisewall import socks5
from noisewall.allocator import MALLOC_ENV, tune_allocator
from noisewall.noise.bench import BenchResult, time_bulk_send
from noisewall.records.names import TRANSPORT_NAMES
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.keyfile import load_or_create_key

BULK = 256 * 1024 * 1024
CHUNK = 256 * 1024
DIRECT = "direct loopback, best of run"
Opener = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


class _Child:
    """A child process that prints one line naming the port it serves."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls, args: list[str], pattern: str, stdout: bool = False,
                    env: dict[str, str] | None = None) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**(env or {}), **os.environ},
        )
        stream = process.stdout if stdout else process.stderr
        assert stream is not None
        line = (await asyncio.wait_for(stream.readline(), 30)).decode()
        match = re.search(pattern, line)
        if match is None:
            process.kill()
            await process.wait()
            raise RuntimeError(f"benchmark child did not start: {line!r}")
        return cls(process, int(match.group(1)))

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def _direct(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def _via(socks_port: int) -> Opener:
    async def opener(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await socks5.open_connection(("127.0.0.1", socks_port), "127.0.0.1", port)
    return opener


async def _bulk(opener: Opener, port: int, size: int) -> float:
    """Seconds to push ``size`` bytes to the sink and hear that it has them all."""
    reader, writer = await opener(port)
    return await time_bulk_send(reader, writer, size, CHUNK)


async def _round_trips(opener: Opener, port: int, count: int) -> float:
    """Median seconds of a 64-byte echo on one connection."""
    reader, writer = await opener(port)
    message = os.urandom(64)
    times = []
    for _ in range(count):
        start = time.perf_counter()
        writer.write(message)
        await reader.readexactly(len(message))
        times.append(time.perf_counter() - start)
    writer.close()
    return statistics.median(times)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _tunnel(transport: str, workdir: Path, allow: list[str]) -> tuple[_Child, _Child]:
    server_key, client_key = workdir / f"{transport}.server", workdir / f"{transport}.client"
    client_public = load_or_create_key(client_key).public.hex()
    server_public = load_or_create_key(server_key).public.hex()
    allow_args = [arg for dest in allow for arg in ("--allow", dest)]
    server = await _Child.start(
        ["-m", "noisewall", "tunnel", "server", "--listen", "127.0.0.1:0", "--key",
         str(server_key), "--transport", transport, "--allow-client", client_public,
         *allow_args], r"on 127\.0\.0\.1:(\d+)")
    try:
        client = await _Child.start(
            ["-m", "noisewall", "tunnel", "client", "--server", f"127.0.0.1:{server.port}",
             "--server-key", server_public, "--key", str(client_key), "--transport", transport,
             "--socks", "127.0.0.1:0"], r"SOCKS5 on 127\.0\.0\.1:(\d+)")
    except BaseException:
        await server.stop()
        raise
    return server, client


async def _pipe(source: TcpStream, target: TcpStream) -> None:
    while data := await source.read(CHUNK):
        target.write(data)
        await target.drain()
    target.write_eof()


async def _relay_connection(connection: TcpStream, port: int) -> None:
    onward = await TcpStream.connect("127.0.0.1", port)
    try:
        await asyncio.gather(_pipe(connection, onward), _pipe(onward, connection))
    finally:
        onward.close()
        connection.close()


async def _serve_relay(port: int) -> None:
    """Relay every connection to ``127.0.0.1:port`` (the reference for two extra hops)."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def accepted(connection: TcpStream) -> None:
        task = loop.create_task(_relay_connection(connection, port))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await loop.create_server(lambda: TcpStream(accepted), "127.0.0.1", 0)
    print(f"relay on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


async def _relays(size: int, rounds: int, sink_port: int, directs: list[float]) -> float:
    """Best-round seconds through two plain relays; direct rounds alternate into ``directs``."""
    second = await _Child.start(["-m", "noisewall.tunnel.bench", "relay", str(sink_port)],
                                r"on 127\.0\.0\.1:(\d+)", stdout=True)
    try:
        first = await _Child.start(["-m", "noisewall.tunnel.bench", "relay", str(second.port)],
                                   r"on 127\.0\.0\.1:(\d+)", stdout=True)
        try:
            relayed = float("inf")
            for _ in range(rounds):
                directs.append(await _bulk(_direct, sink_port, size))
                relayed = min(relayed, await _bulk(_direct, first.port, size))
        finally:
            await first.stop()
    finally:
        await second.stop()
    return relayed


async def _run(quick: bool, workdir: Path) -> list[BenchResult]:
    size = BULK // 16 if quick else BULK
    rounds = 2 if quick else 3
    trips = 50 if quick else 500
    sink = await _Child.start(["-m", "noisewall.censor.bench", "sink"], r"port (\d+)",
                              stdout=True, env=MALLOC_ENV)
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = int(echo.sockets[0].getsockname()[1])
    directs: list[float] = []
    throughputs = {"reference: two plain TCP relays (no crypto, no mux)": 0.0}
    trips_ms: dict[str, tuple[float, float]] = {}
    try:
        throughputs["reference: two plain TCP relays (no crypto, no mux)"] = await _relays(
            size, rounds, sink.port, directs)
        for transport in TRANSPORT_NAMES:
            server, client = await _tunnel(transport, workdir,
                                           [f"127.0.0.1:{sink.port}", f"127.0.0.1:{echo_port}"])
            via = _via(client.port)
            try:
                tunnelled = float("inf")
                for _ in range(rounds):
                    directs.append(await _bulk(_direct, sink.port, size))
                    tunnelled = min(tunnelled, await _bulk(via, sink.port, size))
                trips_ms[transport] = (await _round_trips(via, echo_port, trips) * 1e3,
                                       await _round_trips(_direct, echo_port, trips) * 1e3)
            finally:
                await client.stop()
                await server.stop()
            throughputs[f"{transport}: throughput"] = tunnelled
    finally:
        echo.close()
        await sink.stop()
    # One baseline for every row, the best direct round of the whole run: the
    # sink sometimes falls into reading small pieces and a round runs 3-6x
    # slower, which would flatter whichever rows it happened next to.
    direct = size / min(directs) / 1e6
    results: list[BenchResult] = []
    for name, seconds in throughputs.items():
        results.append(BenchResult(f"tunnel {name}", "MB/s", size / seconds / 1e6,
                                   DIRECT, direct))
        label = name.removesuffix(": throughput")
        if label in trips_ms:
            tunnel_ms, direct_ms = trips_ms[label]
            results.append(BenchResult(f"tunnel {label}: 64 B round trip p50", "ms",
                                       tunnel_ms, "direct loopback", direct_ms))
    return results


def run_tunnel_benchmarks(quick: bool = False) -> list[BenchResult]:
    """Throughput and round-trip time of every transport, each next to direct loopback."""
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_run(quick, Path(tmp)))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "relay":
    tune_allocator()
    asyncio.run(_serve_relay(int(sys.argv[2])))
