"""``noisewall bench tunnel``: each transport's throughput both ways, next to OpenSSH's ``ssh -D``.

Everything runs as separate processes, as in real use: a byte sink (the
censor benchmark's), a byte source, a ``noisewall tunnel server`` and
``noisewall tunnel client`` per transport, and, when OpenSSH's server is
installed, a real ``sshd`` on loopback with an ``ssh -D`` client
(:mod:`noisewall.bench.ssh`, ``aes128-gcm@openssh.com``). This
process is the application: it pushes the same bytes through each path's
SOCKS5 entry to the sink (upload) and pulls them from the source
(download), with the same SOCKS5 client. Every round visits every path in
turn, so a busy shared machine slows all of them alike; each figure is the
median of its rounds. Each round also charges every process tree with the
CPU seconds it spent (``/proc``), per GB moved.

Two references: direct loopback (no hop at all), and two plain TCP relays
in child processes (the same ``TcpStream`` copy loop the tunnel uses, no
crypto, no mux): the cost of the two extra hops alone. The sink and the
source run with glibc malloc settings (:data:`noisewall.allocator.MALLOC_ENV`)
that keep them out of a page-faulting slow mode; the tunnel processes apply
the same settings themselves. Round trips are 64-byte echoes through one
stream, median of many.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from noisewall import socks5
from noisewall.allocator import MALLOC_ENV, tune_allocator
from noisewall.bench import ssh as bench_ssh
from noisewall.bench.kit import BenchResult, ServingChild, module_argv, time_bulk_send
from noisewall.bench.proc_cpu import tree_cpu_seconds
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import TRANSPORT_NAMES
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.keyfile import load_or_create_key

BULK = 256 * 1024 * 1024
CHUNK = 256 * 1024
ROUNDS = 5
DIRECT = "direct loopback"
RELAYS = "two plain TCP relays (no crypto, no mux)"
DIRECTIONS = ("upload", "download")
Opener = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def _child(workdir: Path, name: str, argv: list[str], pattern: str,
                 env: dict[str, str] | None = None) -> ServingChild:
    """A child process started (and its port awaited) off the event loop."""
    return await asyncio.to_thread(ServingChild, argv, workdir / f"{name}.log", pattern, env=env)


async def _stop(child: ServingChild) -> None:
    await asyncio.to_thread(child.stop)


async def _direct(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


def _via(socks_port: int) -> Opener:
    async def opener(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await socks5.open_connection(Endpoint("127.0.0.1", socks_port), "127.0.0.1", port)
    return opener


async def _upload(opener: Opener, port: int, size: int) -> float:
    """Seconds to push ``size`` bytes to the sink and hear that it has them all."""
    reader, writer = await opener(port)
    return await time_bulk_send(reader, writer, size, CHUNK)


async def _download(opener: Opener, port: int, size: int) -> float:
    """Seconds to ask the source for ``size`` bytes and receive them all."""
    reader, writer = await opener(port)
    start = time.perf_counter()
    writer.write(size.to_bytes(8, "big"))
    received = 0
    while data := await reader.read(CHUNK):
        received += len(data)
    elapsed = time.perf_counter() - start
    writer.close()
    if received != size:
        raise RuntimeError(f"the source sent {received} of {size} bytes")
    return elapsed


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


@dataclass
class _Path:
    """One way from the application to the sink and source, and the processes it runs on."""

    name: str
    opener: Opener
    #: (role, pid) of each process tree charged with CPU, e.g. ("tunnel client", 1234).
    processes: list[tuple[str, int]]
    stop: Callable[[], Awaitable[None]]
    seconds: dict[str, list[float]] = field(default_factory=dict)
    #: CPU seconds per GB, per direction and role, one entry per round.
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: Processes that carry only one direction (the relay chains), instead of ``processes``.
    by_direction: dict[str, list[tuple[str, int]]] = field(default_factory=dict)

    def charged(self, direction: str) -> list[tuple[str, int]]:
        """The (role, pid) of each process tree a transfer in ``direction`` runs through."""
        return self.by_direction.get(direction, self.processes)


async def _tunnel(transport: str, workdir: Path, allow: list[str]) -> _Path:
    server_key, client_key = workdir / f"{transport}.server", workdir / f"{transport}.client"
    client_public = load_or_create_key(client_key).public.hex()
    server_public = load_or_create_key(server_key).public.hex()
    allow_args = [arg for dest in allow for arg in ("--allow", dest)]
    server = await _child(workdir, f"{transport}-server", module_argv(
        "noisewall", "tunnel", "server", "--listen", "127.0.0.1:0", "--key", server_key,
        "--transport", transport, "--allow-client", client_public, *allow_args),
        r"on 127\.0\.0\.1:(\d+)")
    try:
        client = await _child(workdir, f"{transport}-client", module_argv(
            "noisewall", "tunnel", "client", "--server", f"127.0.0.1:{server.port}",
            "--server-key", server_public, "--key", client_key, "--transport", transport,
            "--socks", "127.0.0.1:0"), r"SOCKS5 on 127\.0\.0\.1:(\d+)")
    except BaseException:
        await _stop(server)
        raise

    async def stop() -> None:
        await _stop(client)
        await _stop(server)

    return _Path(transport, _via(client.port), [("tunnel client", client.process.pid),
                                                 ("tunnel server", server.process.pid)], stop)


async def _ssh(workdir: Path) -> _Path:
    ssh = await bench_ssh.SshTunnel.start(workdir)
    return _Path(bench_ssh.NAME, _via(ssh.socks_port),
                 [("ssh", ssh.client.pid), ("sshd", ssh.server.pid)], ssh.stop)


async def _relays(workdir: Path, sink_port: int, source_port: int) -> _Path:
    """Two chains of two plain relays, to the sink and to the source."""
    children: list[ServingChild] = []

    async def stop() -> None:
        for child in reversed(children):
            await _stop(child)

    try:
        for end in (sink_port, source_port):
            onward = end
            for hop in ("second", "first"):
                children.append(await _child(
                    workdir, f"relay-{end}-{hop}", module_argv(__name__, "relay", onward),
                    r"on 127\.0\.0\.1:(\d+)"))
                onward = children[-1].port
    except BaseException:
        await stop()
        raise
    entries = {sink_port: children[1].port, source_port: children[3].port}

    async def opener(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await _direct(entries[port])

    # Charged like ssh and sshd: what one Python hop costs with no crypto and no mux.
    chains = {direction: [("entry relay", children[at + 1].process.pid),
                          ("exit relay", children[at].process.pid)]
              for direction, at in zip(DIRECTIONS, (0, 2), strict=True)}
    return _Path(RELAYS, opener, [], stop, by_direction=chains)


def _helper_role(direction: str) -> str:
    return "sink" if direction == "upload" else "source"


async def _measure(path: _Path, direction: str, helper: ServingChild, size: int) -> None:
    """One transfer along ``path`` (to the sink or from the source), with the CPU it cost."""
    port = helper.port
    roles = [*path.charged(direction), (_helper_role(direction), helper.process.pid)]
    before = [tree_cpu_seconds(pid) for _, pid in roles]
    app_before = time.process_time()
    move = _upload if direction == "upload" else _download
    path.seconds.setdefault(direction, []).append(await move(path.opener, port, size))
    gigabytes = size / 1e9
    for (role, pid), spent in zip(roles, before, strict=True):
        path.cpu.setdefault((direction, role), []).append(
            (tree_cpu_seconds(pid) - spent) / gigabytes)
    path.cpu.setdefault((direction, "application"), []).append(
        (time.process_time() - app_before) / gigabytes)


def _results(paths: list[_Path], size: int,
             trips_ms: dict[str, tuple[float, float]]) -> list[BenchResult]:
    """Medians: throughput against ``ssh -D`` (or direct), CPU per GB of every process."""
    by_name = {path.name: path for path in paths}
    baseline = by_name.get(bench_ssh.NAME, by_name[DIRECT])
    rate: dict[tuple[str, str], float] = {
        (path.name, direction): size / statistics.median(path.seconds[direction]) / 1e6
        for path in paths for direction in DIRECTIONS
    }
    results: list[BenchResult] = []
    for direction in DIRECTIONS:
        for path in paths:
            if path.name == DIRECT:
                continue
            against = by_name[DIRECT] if path in (baseline, by_name[RELAYS]) else baseline
            results.append(BenchResult(
                f"tunnel {path.name}: {direction}", "MB/s", rate[path.name, direction],
                f"{against.name}, median", rate[against.name, direction]))
    for direction in DIRECTIONS:
        for path in paths:
            if not path.charged(direction) or path is baseline:
                continue
            common = [_helper_role(direction), "application"]
            pairs = [*zip([role for role, _ in path.charged(direction)],
                          [role for role, _ in baseline.processes], strict=True),
                     *zip(common, common, strict=True)]
            for role, base_role in pairs:
                results.append(BenchResult(
                    f"tunnel {path.name}: {direction}, {role}", "CPU-s/GB",
                    statistics.median(path.cpu[direction, role]), f"{base_role}",
                    statistics.median(baseline.cpu[direction, base_role])))
    for label, (tunnel_ms, direct_ms) in trips_ms.items():
        results.append(BenchResult(f"tunnel {label}: 64 B round trip p50", "ms", tunnel_ms,
                                   DIRECT, direct_ms))
    return results


async def _run(workdir: Path, size: int, rounds: int, trips: int) -> list[BenchResult]:
    """Every path, ``rounds`` rounds of ``size`` bytes each way, ``trips`` round trips."""
    sink = await _child(workdir, "sink", module_argv("noisewall.bench.censor", "sink"),
                        r"port (\d+)", env=MALLOC_ENV)
    source = await _child(workdir, "source", module_argv(__name__, "source"), r"port (\d+)",
                          env=MALLOC_ENV)
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = int(echo.sockets[0].getsockname()[1])
    allow = [f"127.0.0.1:{port}" for port in (sink.port, source.port, echo_port)]

    async def nothing() -> None:
        return None

    paths = [_Path(DIRECT, _direct, [], nothing)]
    trips_ms: dict[str, tuple[float, float]] = {}
    try:
        paths.append(await _relays(workdir, sink.port, source.port))
        if bench_ssh.available():
            paths.append(await _ssh(workdir))
        for transport in TRANSPORT_NAMES:
            paths.append(await _tunnel(transport, workdir, allow))
        for _ in range(rounds):
            for direction in DIRECTIONS:
                helper = sink if direction == "upload" else source
                for path in paths:
                    await _measure(path, direction, helper, size)
        for path in paths[2:]:
            trips_ms[path.name] = (await _round_trips(path.opener, echo_port, trips) * 1e3,
                                   await _round_trips(_direct, echo_port, trips) * 1e3)
    finally:
        for path in reversed(paths):
            await path.stop()
        echo.close()
        await _stop(source)
        await _stop(sink)
    return _results(paths, size, trips_ms)


def run_tunnel_benchmarks(quick: bool = False) -> list[BenchResult]:
    """Each transport's throughput both ways next to ``ssh -D``, CPU per GB, round trips."""
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-") as tmp:
        if quick:
            return asyncio.run(_run(Path(tmp), BULK // 16, 2, 50))
        return asyncio.run(_run(Path(tmp), BULK, ROUNDS, 500))


# --- the child processes: plain relays and the byte source ---------------------


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


async def _send_requested(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read an 8-byte size, send that many bytes, close."""
    size = int.from_bytes(await reader.readexactly(8), "big")
    block = os.urandom(CHUNK)
    while size > 0:
        writer.write(block[:size] if size < CHUNK else block)
        size -= CHUNK
        await writer.drain()
    writer.close()


async def _serve_source() -> None:
    server = await asyncio.start_server(_send_requested, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "relay":
    tune_allocator()
    asyncio.run(_serve_relay(int(sys.argv[2])))
elif __name__ == "__main__" and sys.argv[1:] == ["source"]:
    asyncio.run(_serve_source())
