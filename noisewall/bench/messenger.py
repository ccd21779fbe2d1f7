"""``noisewall bench messenger``: message rates, latency and idle-connection memory.

The chat server is a real ``noisewall server`` child process (SQLite WAL,
``synchronous=FULL``, group commit: no ack before its commit). The clients run
in worker child processes of their own, so server and client CPU are separate
processes on the machine's cores. Each worker holds its share of ``--clients``
sender/recipient pairs, twice over: raw chat connections and full
:class:`MessengerClient` profiles. Every round runs, in turn:

* ``hello`` (baseline): each sender connection pipelines ``hello`` requests
  (request + reply, one store read on the server's database thread, no write,
  no fsync).
* ``relay``: each sender pipelines ``send`` requests carrying a pre-made opaque
  envelope the size of a real E2E text (no client crypto) to its recipient,
  which is online and answers ``delivered`` for every batch of pushes it has
  read. Counted: messages that reached their recipient, per second. Each one
  costs the server two requests (``send``, ``delivered``), one push, three
  store jobs and two durable commits, shared with whatever else is in the
  group.
* ``e2e``: each sender calls :meth:`MessengerClient.send_text` from
  ``E2E_WINDOW`` concurrent loops (X3DH session already set up; Double Ratchet
  encrypt, profile history and outbox in one commit, the server's ack after
  its commit; sends waiting together go out in one pipelined flush); each
  recipient runs
  :meth:`MessengerClient.receive` (push, decrypt, history, ``delivered`` to the
  server, an end-to-end ``delivered`` receipt per batch back to the sender,
  whose own receive loop decrypts it). Counted: messages decrypted by their
  recipient, per second.

The best round of each kind is kept; E2E is reported against the relay rate
(what the crypto and client bookkeeping cost), the relay against ``hello``.

Latency: single messages, one at a time on an otherwise idle server, in
alternating samples: ``send_text`` called to message decrypted at the
recipient (E2E), ``send`` written to push read by the recipient (relay), and a
``hello`` round trip.

Idle memory: a child process opens N authenticated Noise connections (one
static key, unregistered, as in the idle-connection test) to a fresh server;
the server's RSS growth divided by N, against a plain asyncio TCP server
(``asyncio.start_server`` + streams, no Noise) holding the same number of
plain connections.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import os
import random
import re
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisewall.bench.kit import BenchResult, ChildProcess, ServingChild, module_argv, rss
from noisewall.messenger import payloads
from noisewall.messenger.client import MessengerClient, Received
from noisewall.messenger.connection import ChatConnection
from noisewall.messenger.messages import (
    Ack,
    Delivered,
    Hello,
    Message,
    Register,
    Send,
    Welcome,
    parse_push,
)
from noisewall.messenger.pipes import client_settings
from noisewall.messenger.profile import Profile
from noisewall.noise import dh_function
from noisewall.noise.stream import NoiseStream, connect

DH = dh_function("25519")
HOST = "127.0.0.1"
WORKER_PROCESSES = 2  # client processes; the server is a third, on a 2-core machine
WINDOW = 64  # outstanding pipelined requests per sender connection
E2E_WINDOW = 4  # send_text calls in flight per E2E sender (a person typing ahead)
TOTALS = {"hello": 24_000, "relay": 16_000, "e2e": 2_400}  # messages per round, all pairs
QUICK_TOTALS = {"hello": 2_000, "relay": 2_000, "e2e": 240}
RECEIVE_WINDOW = 0.5  # seconds each MessengerClient.receive call listens (receipts go out
# within RECEIPT_LINGER of a pause anyway; a short window only adds polling work)
TEXT = "message {} of the noisewall messenger benchmark"
CIPHERTEXT_BYTES = 160  # a real Double Ratchet ciphertext of TEXT is this long
STEP_TIMEOUT = 120.0

# ----------------------------------------------------------------- orchestrator


def _worker(log: Path, *args: object) -> ChildProcess:
    """A child of this module spoken to in lines (see the worker side below)."""
    return ChildProcess(module_argv(__name__, *args), log, answers=True)


def _server(data: Path, log: Path, options: Sequence[str] = ()) -> ServingChild:
    """``noisewall server`` (chat only); its port is read from its log."""
    return ServingChild(module_argv("noisewall", "server", "--data", data, "--listen",
                                    f"{HOST}:0", "--media-listen", "off", *options),
                        log, r"chat on 127\.0\.0\.1:(\d+)")


def _round(workers: list[ChildProcess], command: dict[str, Any]) -> float:
    """Messages per second of one round run by every worker at once."""
    for worker in workers:
        worker.ask(command)
    replies = [worker.answer(STEP_TIMEOUT + 30) for worker in workers]
    messages = sum(int(reply["messages"]) for reply in replies)
    elapsed = max(float(r["end"]) for r in replies) - min(float(r["start"]) for r in replies)
    return messages / elapsed


def _percentile(samples: list[float], percent: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1]


def _traffic_benchmarks(clients: int, quick: bool, workdir: Path) -> list[BenchResult]:
    workdir.mkdir()
    server = _server(workdir / "server", workdir / "server.log")
    processes = min(clients, WORKER_PROCESSES)
    shares = [clients // processes + (k < clients % processes) for k in range(processes)]
    workers: list[ChildProcess] = []
    try:
        for k, pairs in enumerate(shares):
            workers.append(_worker(workdir / f"worker{k}.log", "worker", server.port, pairs,
                                   f"w{k}", workdir))
        for worker, pairs in zip(workers, shares, strict=True):
            worker.answer(60 + 2 * pairs)  # ready: accounts registered, E2E sessions set up
        rounds = 1 if quick else 3
        totals = QUICK_TOTALS if quick else TOTALS
        counts = {kind: max(total // clients, 10) for kind, total in totals.items()}
        best = dict.fromkeys(counts, 0.0)
        for index in range(rounds):
            for kind, count in counts.items():
                rate = _round(workers, {"cmd": kind, "count": count, "window": WINDOW,
                                        "round": index})
                best[kind] = max(best[kind], rate)
        workers[0].ask({"cmd": "latency", "samples": 40 if quick else 400})
        latency: dict[str, list[float]] = workers[0].answer(STEP_TIMEOUT + 30)["samples"]
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    ms = {kind: [s * 1000 for s in samples] for kind, samples in latency.items()}
    label = f"{clients} pair" + ("s" if clients != 1 else "")
    return [
        BenchResult(f"relayed messages, pre-encrypted, {label}", "messages/s",
                    best["relay"], "pipelined hello requests (no disk write)", best["hello"]),
        BenchResult(f"E2E text messages delivered + decrypted, {label}", "messages/s",
                    best["e2e"], "relayed pre-encrypted messages", best["relay"]),
        BenchResult("E2E latency p50, send_text to decrypted", "ms",
                    statistics.median(ms["e2e"]), "relay p50, send to push",
                    statistics.median(ms["relay"])),
        BenchResult("E2E latency p99", "ms", _percentile(ms["e2e"], 99), "relay p99",
                    _percentile(ms["relay"], 99)),
        BenchResult("relay latency p50, send to push", "ms", statistics.median(ms["relay"]),
                    "hello round trip p50", statistics.median(ms["hello"])),
        BenchResult("relay latency p99", "ms", _percentile(ms["relay"], 99),
                    "hello round trip p99", _percentile(ms["hello"], 99)),
    ]


def _idle_growth(pid: int, port: int, kind: str, count: int, workdir: Path) -> float:
    """Bytes of RSS growth per connection of process ``pid`` holding ``count`` idle ones."""
    before = rss(pid)
    crowd = _worker(workdir / f"crowd-{kind}.log", "crowd", kind, port, count)
    try:
        opened, failed = map(int, re.findall(r"\d+", crowd.readline(600)))
        time.sleep(1.0)
        after = rss(pid)
    finally:
        crowd.stop()
    if failed or opened != count:
        raise RuntimeError(f"{kind} crowd opened {opened} of {count} connections")
    return (after - before) / count


def _crowd_admitted(count: int) -> tuple[str, ...]:
    """Server options that let ``count`` idle connections without accounts stay while measured."""
    return ("--max-connections", str(count + 100), "--max-unregistered", str(count),
            "--auth-timeout", "600")


def _memory_benchmark(quick: bool, workdir: Path) -> BenchResult:
    workdir.mkdir()
    count = 1000 if quick else 10_000
    server = _server(workdir / "server", workdir / "server.log", _crowd_admitted(count))
    try:
        ours = _idle_growth(server.pid, server.port, "noise", count, workdir)
    finally:
        server.stop()
    plain = _worker(workdir / "plain-server.log", "plain-server")
    try:
        port = int(plain.readline(30))
        base = _idle_growth(plain.pid, port, "tcp", count, workdir)
    finally:
        plain.stop()
    return BenchResult(f"server memory per idle Noise connection, {count:,} held", "KiB",
                       ours / 1024, "plain asyncio TCP server, same count", base / 1024)


def run_messenger_benchmarks(clients: int = 8, quick: bool = False) -> list[BenchResult]:
    """Run every messenger benchmark with ``clients`` sender/recipient pairs.

    ``quick`` shrinks the work for smoke tests (figures are not meaningful).
    """
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-") as tmp:
        workdir = Path(tmp)
        results = _traffic_benchmarks(clients, quick, workdir / "traffic")
        results.append(_memory_benchmark(quick, workdir / "idle"))
    return results


# ------------------------------------------------------- WeChat-mode filtering

FILTER_COMBINATIONS = 10_000
FILTER_ROUNDS = 6  # rounds of each server, interleaved; the best of each counts


@functools.cache
def filter_vocabulary(seed: int = 2017) -> tuple[list[str], list[str]]:
    """Anchor words (first terms, which the benchmark's messages use) and the other terms."""
    rng = random.Random(seed)  # noqa: S311 - reproducible benchmark data, not a secret

    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randrange(5, 11)))

    return [word() for _ in range(2_000)], [f"{word()} {word()}" for _ in range(4_000)]


def write_filter_lists(path: Path, combinations: int, seed: int = 2017) -> None:
    """``combinations`` keyword combinations of 2-3 terms: an anchor word and other terms."""
    anchors, others = filter_vocabulary(seed)
    rng = random.Random(seed + 1)  # noqa: S311 - reproducible benchmark data, not a secret
    lines = ["keywords:"]
    for n in range(combinations):
        terms = [anchors[n % len(anchors)], *rng.sample(others, rng.randrange(1, 3))]
        lines.append(f"  - {{id: c{n}, terms: {json.dumps(terms)}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _clear_envelope(n: int) -> dict[str, Any]:
    """A clear text message of the size of the E2E benchmark's, with listed anchor words.

    Every message makes the server look at some combinations (each anchor word starts
    five of them) but completes none, so every message is delivered: the cost measured is
    the scan, not a drop.
    """
    anchors, _ = filter_vocabulary()
    words = [anchors[(n * 7 + k) % len(anchors)] for k in range(3)]
    body = f"{TEXT.format(n)} {' '.join(words)}"
    return payloads.unsealed({"kind": "text", "text": body[:CIPHERTEXT_BYTES].ljust(
        CIPHERTEXT_BYTES), "id": f"m{n}", "ts": 0.0})


def run_filtering_benchmark(clients: int = 8, quick: bool = False) -> list[BenchResult]:
    """WeChat mode's cost: relayed messages/s with 10,000 combinations loaded vs the E2E relay.

    Two ``noisewall server`` children, one E2E and one ``--mode wechat
    --filters`` (10,000 combinations), run side by side, and their relay rounds
    alternate (same clear messages, same worker processes' shape), so the
    ratio comes from one run under one machine load.
    """
    with tempfile.TemporaryDirectory(prefix="noisewall-bench-") as tmp:
        workdir = Path(tmp)
        lists = workdir / "filters.yaml"
        write_filter_lists(lists, FILTER_COMBINATIONS)
        servers = {"e2e": _server(workdir / "e2e", workdir / "e2e.log")}
        workers: dict[str, ChildProcess] = {}
        try:
            servers["wechat"] = _server(workdir / "wechat", workdir / "wechat.log",
                                        ("--mode", "wechat", "--filters", str(lists)))
            for mode, server in servers.items():
                workers[mode] = _worker(workdir / f"filter-{mode}.log", "filter-worker",
                                        server.port, clients, mode)
            for worker in workers.values():
                worker.answer(60 + 2 * clients)
            count = max((QUICK_TOTALS if quick else TOTALS)["relay"] // clients, 10)
            best = dict.fromkeys(servers, 0.0)
            for index in range(1 if quick else FILTER_ROUNDS):
                for mode, worker in workers.items():
                    rate = _round([worker], {"cmd": "relay", "count": count, "window": WINDOW,
                                             "round": index})
                    best[mode] = max(best[mode], rate)
        finally:
            for worker in workers.values():
                worker.stop()
            for server in servers.values():
                server.stop()
    label = f"{clients} pair" + ("s" if clients != 1 else "")
    return [BenchResult(
        f"WeChat-mode relayed messages, {FILTER_COMBINATIONS:,} combinations loaded, {label}",
        "messages/s", best["wechat"], "E2E relay, same messages, same run", best["e2e"])]


# ------------------------------------------------------------------ worker side


class _TimedClient(MessengerClient):
    """A :class:`MessengerClient` that notes when each received message is decrypted."""

    def __init__(self, profile: Profile) -> None:
        super().__init__(profile)
        self.decrypted = 0
        self.last_decrypted = 0.0
        self.arrived = asyncio.Event()

    async def _accept_batch(self, pushes: list[Message]) -> list[Received]:
        results = await super()._accept_batch(pushes)
        if results:
            self.decrypted += len(results)
            self.last_decrypted = time.monotonic()
            self.arrived.set()
        return results


@dataclass
class _RelayPair:
    recipient_name: str
    sender: ChatConnection
    recipient: ChatConnection


@dataclass
class _Pair(_RelayPair):
    e2e_sender: _TimedClient
    e2e_recipient: _TimedClient


@dataclass
class _Worker:
    port: int
    pairs: list[_Pair] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"{HOST}:{self.port}"


def _envelope(n: int) -> dict[str, Any]:
    """An opaque envelope shaped and sized like a real E2E text (the server never looks in)."""
    return {"v": 1, "x3dh": None,
            "ratchet": {"dh": base64.b64encode(os.urandom(32)).decode(), "pn": 0, "n": n},
            "ct": base64.b64encode(os.urandom(CIPHERTEXT_BYTES)).decode()}


def _lanes(items: list[Any], window: int) -> list[list[Any]]:
    """``items`` dealt into ``window`` lanes, each sent one after another."""
    return [items[k::window] for k in range(window) if items[k::window]]


async def _raw_account(port: int, name: str) -> ChatConnection:
    connection = await ChatConnection.open(HOST, port, DH.generate_keypair(), None)
    await connection.call(Register(name), Welcome)
    return connection


async def _until(client: _TimedClient, count: int) -> None:
    while client.decrypted < count:
        await client.receive(wait=RECEIVE_WINDOW)


async def _receive_until(client: _TimedClient, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await client.receive(wait=RECEIVE_WINDOW)


async def _setup(worker: _Worker, pairs: int, tag: str, folder: Path) -> None:
    for index in range(pairs):
        s, r = f"{tag}s{index}", f"{tag}r{index}"
        sender, recipient = await _raw_account(worker.port, f"{s}x"), \
            await _raw_account(worker.port, f"{r}x")
        e2e_sender = _TimedClient(Profile(folder / s))
        e2e_recipient = _TimedClient(Profile(folder / r))
        await e2e_sender.register(s, worker.server)
        await e2e_recipient.register(r, worker.server)
        worker.pairs.append(_Pair(f"{r}x", sender, recipient, e2e_sender, e2e_recipient))
    # First contact: X3DH, then the recipient's receipt closes the session handshake, so
    # the measured messages are steady-state Double Ratchet messages.
    for pair in worker.pairs:
        await pair.e2e_sender.send_text(pair.e2e_recipient.name, "hello")
        await _until(pair.e2e_recipient, 1)
        await pair.e2e_sender.receive(wait=0.2)


async def _hello(worker: _Worker, count: int, window: int) -> dict[str, Any]:
    async def lane(connection: ChatConnection, requests: list[int]) -> None:
        for _ in requests:
            await connection.call(Hello(), Welcome, timeout=STEP_TIMEOUT)

    start = time.monotonic()
    await asyncio.gather(*(lane(pair.sender, items) for pair in worker.pairs
                           for items in _lanes(list(range(count)), window)))
    return {"messages": count * len(worker.pairs), "start": start, "end": time.monotonic()}


async def _relay(pairs: Sequence[_RelayPair], count: int, window: int, round_id: int,
                 envelope: Callable[[int], dict[str, Any]] = _envelope) -> dict[str, Any]:
    prefix = f"r{round_id}-"
    envelopes = [envelope(n) for n in range(count)]

    async def lane(pair: _RelayPair, numbers: list[int]) -> None:
        for n in numbers:
            await pair.sender.call(Send(pair.recipient_name, f"{prefix}{n}", envelopes[n]), Ack,
                                   timeout=STEP_TIMEOUT)

    async def drain(connection: ChatConnection) -> float:
        seen: set[str] = set()
        deliveries = 0
        while len(seen) < count:
            batch = [await asyncio.wait_for(connection.pushes.get(), STEP_TIMEOUT)]
            while not connection.pushes.empty():
                batch.append(connection.pushes.get_nowait())
            queue_ids: list[int] = []
            for push in map(parse_push, batch):
                if not isinstance(push, Message):
                    raise RuntimeError(f"recipient connection: {push}")
                if push.msg_id.startswith(prefix):
                    seen.add(push.msg_id)
                    deliveries += 1
                queue_ids.append(push.queue_id)
            await connection.notify(Delivered(queue_ids))
        if deliveries != count:
            raise RuntimeError(f"{deliveries - count} messages delivered twice")
        return time.monotonic()

    start = time.monotonic()
    drains = [asyncio.create_task(drain(pair.recipient)) for pair in pairs]
    await asyncio.gather(*(lane(pair, numbers) for pair in pairs
                           for numbers in _lanes(list(range(count)), window)))
    ends = await asyncio.gather(*drains)
    return {"messages": count * len(pairs), "start": start, "end": max(ends)}


async def _e2e(worker: _Worker, count: int) -> dict[str, Any]:
    stop = asyncio.Event()
    targets = [pair.e2e_recipient.decrypted + count for pair in worker.pairs]

    async def lane(pair: _Pair, numbers: list[int]) -> None:
        for n in numbers:
            await pair.e2e_sender.send_text(pair.e2e_recipient.name, TEXT.format(n))

    receipts = [asyncio.create_task(_receive_until(pair.e2e_sender, stop))
                for pair in worker.pairs]
    start = time.monotonic()
    await asyncio.gather(*(lane(pair, numbers) for pair in worker.pairs
                           for numbers in _lanes(list(range(count)), E2E_WINDOW)),
                         *(_until(pair.e2e_recipient, target)
                           for pair, target in zip(worker.pairs, targets, strict=True)))
    end = max(pair.e2e_recipient.last_decrypted for pair in worker.pairs)
    stop.set()
    await asyncio.gather(*receipts)
    return {"messages": count * len(worker.pairs), "start": start, "end": end}


async def _latency(worker: _Worker, samples: int) -> dict[str, Any]:
    pair = worker.pairs[0]
    stop = asyncio.Event()
    loops = [asyncio.create_task(_receive_until(client, stop))
             for client in (pair.e2e_sender, pair.e2e_recipient)]
    times: dict[str, list[float]] = {"hello": [], "relay": [], "e2e": []}
    for n in range(samples):
        start = time.monotonic()
        await pair.sender.call(Hello(), Welcome)
        times["hello"].append(time.monotonic() - start)

        start = time.monotonic()
        ack = asyncio.create_task(pair.sender.call(
            Send(pair.recipient_name, f"lat-{n}", _envelope(n)), Ack))
        push = parse_push(await asyncio.wait_for(pair.recipient.pushes.get(), STEP_TIMEOUT))
        times["relay"].append(time.monotonic() - start)
        await ack
        if not isinstance(push, Message):
            raise RuntimeError(f"recipient connection: {push}")
        await pair.recipient.notify(Delivered([push.queue_id]))

        recipient = pair.e2e_recipient
        recipient.arrived.clear()
        start = time.monotonic()
        await pair.e2e_sender.send_text(recipient.name, TEXT.format(n))
        await asyncio.wait_for(recipient.arrived.wait(), STEP_TIMEOUT)
        times["e2e"].append(recipient.last_decrypted - start)
        await asyncio.sleep(0.002)
    stop.set()
    await asyncio.gather(*loops)
    return {"samples": times}


async def _read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _serve_worker(port: int, pairs: int, tag: str, folder: Path) -> None:
    worker = _Worker(port)
    await _setup(worker, pairs, tag, folder)
    _say({"ready": True})
    commands: dict[str, Callable[[dict[str, Any]], Any]] = {
        "hello": lambda c: _hello(worker, c["count"], c["window"]),
        "relay": lambda c: _relay(worker.pairs, c["count"], c["window"], c["round"]),
        "e2e": lambda c: _e2e(worker, c["count"]),
        "latency": lambda c: _latency(worker, c["samples"]),
    }
    while line := await _read_line():
        command = json.loads(line)
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                _say(await commands[command["cmd"]](command))
        except Exception as exc:
            _say({"error": f"{type(exc).__name__}: {exc}"})
            raise
    for pair in worker.pairs:
        for closable in (pair.sender, pair.recipient, pair.e2e_sender, pair.e2e_recipient):
            await closable.close()


async def _serve_crowd(kind: str, port: int, count: int) -> None:
    """Open ``count`` idle connections (Noise-authenticated or plain TCP), hold until EOF."""
    settings = client_settings(DH.generate_keypair(), None)
    held: list[NoiseStream | asyncio.StreamWriter] = []
    semaphore = asyncio.Semaphore(200)

    async def one() -> None:
        async with semaphore:
            if kind == "noise":
                held.append(await connect(HOST, port, settings, timeout=60))
            else:
                _, writer = await asyncio.open_connection(HOST, port)
                held.append(writer)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    failed = sum(isinstance(result, BaseException) for result in results)
    _say_line(f"open {len(held)} failed {failed}")
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for item in held:
        if isinstance(item, asyncio.StreamWriter):
            item.close()
        else:
            await item.close()


def _say_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def _serve_plain() -> None:
    """The memory baseline: an asyncio TCP server whose handler waits for EOF."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, HOST, 0)
    _say_line(str(server.sockets[0].getsockname()[1]))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()


async def _serve_filter_worker(port: int, pairs: int, tag: str) -> None:
    """Relay pairs of international accounts (delivered on either server) answering ``relay``."""

    async def account(name: str) -> ChatConnection:
        connection = await ChatConnection.open(HOST, port, DH.generate_keypair(), None)
        await connection.call(Register(name, "international"), Welcome)
        return connection

    relay_pairs = [_RelayPair(f"{tag}r{k}", await account(f"{tag}s{k}"),
                              await account(f"{tag}r{k}")) for k in range(pairs)]
    _say({"ready": True})
    while line := await _read_line():
        command = json.loads(line)
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                _say(await _relay(relay_pairs, command["count"], command["window"],
                                  command["round"], _clear_envelope))
        except Exception as exc:
            _say({"error": f"{type(exc).__name__}: {exc}"})
            raise
    for pair in relay_pairs:
        await pair.sender.close()
        await pair.recipient.close()


def _child_main(argv: list[str]) -> None:
    if argv[0] == "filter-worker":
        asyncio.run(_serve_filter_worker(int(argv[1]), int(argv[2]), argv[3]))
    elif argv[0] == "worker":
        asyncio.run(_serve_worker(int(argv[1]), int(argv[2]), argv[3], Path(argv[4])))
    elif argv[0] == "crowd":
        asyncio.run(_serve_crowd(argv[1], int(argv[2]), int(argv[3])))
    elif argv[0] == "plain-server":
        asyncio.run(_serve_plain())
    else:
        raise SystemExit(f"unknown benchmark child {argv[0]!r}")


if __name__ == "__main__":
    _child_main(sys.argv[1:])
