"""The censor's middlebox: a TCP relay that classifies each flow and enforces the policy.

Clients reach it through port-forward routes or a SOCKS5 gateway. For each
flow it connects upstream at once, lets server bytes through while it reads
the client's first bytes (a GFW sees packets pass before it decides), holds
the client's bytes until the flow is classified, asks the policy for one
decision, logs it as a JSON line, and then enforces it:

* ``allow``: relay both ways; ``delay``: relay with added one-way latency;
* ``reset``: tear both sides down with TCP RSTs (SO_LINGER 0, then abort);
* ``drop``: stop forwarding and leave both ends to time out;
* ``throttle``: a token bucket at the configured rate in each direction;
* ``flaky``: fail a fraction of flows at once (``fail``) or let them stall
  after some bytes (``stall``).

Every socket is a :class:`~noisewall.tcp_stream.TcpStream`. Once a flow is
allowed, the middlebox has nothing left to inspect and hands both sockets to
the kernel (:mod:`noisewall.censor.splicing`), which relays the bytes
without copying them through Python. The flow table is bounded
(``max_flows``; the least recently active flow is evicted) and idle flows
are closed after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TextIO

from noisewall import socks5
from noisewall.censor.detection import FlowRecord
from noisewall.censor.flowclassifier import FlowClassifier
from noisewall.censor.metrics import CensorMetrics
from noisewall.censor.policy import Decision, Policy
from noisewall.censor.shaping import TokenBucket, kbit_to_bytes
from noisewall.censor.splicing import AVAILABLE as SPLICE_AVAILABLE
from noisewall.censor.splicing import PipePool, SpliceEnd, splice_relay
from noisewall.clock import Clock, SystemClock
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream

log = logging.getLogger("noisewall.censor")

#: The most one read takes from a stream (big reads keep the per-byte Python cost low).
CHUNK = 1 << 20
#: Loopback only, unless the operator widens it: an open relay is a bug.
DEFAULT_SOCKS_ALLOW = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class Route:
    """Connections to ``listen`` are relayed to ``target``."""

    listen: Endpoint
    target: Endpoint


@dataclass
class MiddleboxConfig:
    """Tunables of the relay (policy and clock are given separately)."""

    max_flows: int = 20000
    idle_timeout: float = 300.0
    classify_timeout: float = 2.0
    connect_timeout: float = 10.0
    socks_allow: Sequence[str] = DEFAULT_SOCKS_ALLOW
    #: Relay allowed bulk flows with ``splice(2)`` in the kernel; False copies
    #: them through Python like every other effect (for comparison, and where
    #: ``splice`` does not exist).
    kernel_relay: bool = SPLICE_AVAILABLE
    #: Bytes an allowed flow relays through Python before it goes to the
    #: kernel: handing a flow over costs more than copying a short exchange.
    kernel_relay_after: int = 1 << 20


@dataclass
class Flow:
    """One relayed connection pair and its state."""

    ident: int
    record: FlowRecord
    client: TcpStream
    server: TcpStream | None = None
    decision: Decision | None = None
    last_active: float = field(default_factory=time.monotonic)
    bytes_up: int = 0
    bytes_down: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    buckets: dict[bool, TokenBucket] = field(default_factory=dict)  # throttle, per direction
    bulk: bool = False  # relayed enough to go to the kernel relay


class Middlebox:
    """A running censor: routes and/or a SOCKS5 gateway in front of real servers."""

    def __init__(
        self,
        policy: Callable[[], Policy],
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        decision_log: TextIO | None = None,
        metrics: CensorMetrics | None = None,
        config: MiddleboxConfig | None = None,
    ) -> None:
        self._policy = policy
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()  # noqa: S311 - censorship simulation, not crypto
        self._log = decision_log
        self.metrics = metrics
        self.config = config or MiddleboxConfig()
        self._socks_allow = [ipaddress.ip_network(net) for net in self.config.socks_allow]
        self._servers: list[asyncio.Server] = []
        self._flows: dict[int, Flow] = {}
        self._next_id = 0
        self._janitor: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._pipes = PipePool()
        #: Flows handed to the kernel relay so far.
        self.kernel_relayed = 0

    # --- lifecycle -----------------------------------------------------

    async def add_route(self, route: Route) -> Endpoint:
        """Listen for a route; returns the bound endpoint (port 0 picks one)."""
        return await self._listen(route.listen,
                                  lambda stream: self._serve_flow(stream, route.target))

    async def add_socks(self, listen: Endpoint) -> Endpoint:
        """Listen as a SOCKS5 gateway; returns the bound endpoint."""
        return await self._listen(listen, self._serve_socks)

    async def _listen(self, listen: Endpoint,
                      serve: Callable[[TcpStream], Coroutine[Any, Any, None]]) -> Endpoint:
        server = await asyncio.get_running_loop().create_server(
            lambda: TcpStream(partial(self._accepted, serve)), listen.host, listen.port)
        self._servers.append(server)
        self._start_janitor()
        host, port = server.sockets[0].getsockname()[:2]
        return Endpoint(host, port)

    def _accepted(self, serve: Callable[[TcpStream], Coroutine[Any, Any, None]],
                  stream: TcpStream) -> None:
        if self._closing:
            stream.close()
            return
        task = asyncio.get_running_loop().create_task(serve(stream))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    @property
    def flow_count(self) -> int:
        """Flows currently in the table."""
        return len(self._flows)

    async def close(self) -> None:
        """Stop listening, close every flow, and return once all of their tasks have ended."""
        self._closing = True
        for server in self._servers:
            server.close()
        tasks: set[asyncio.Task[Any]] = set(self._connections)
        if self._janitor is not None:
            self._janitor.cancel()
            tasks.add(self._janitor)
        for flow in list(self._flows.values()):
            tasks.update(flow.tasks)
            self._close_flow(flow)
        for task in self._connections:
            task.cancel()  # a throttled or delayed flow may be asleep for a while
        if tasks:
            await asyncio.wait(tasks)
        for server in self._servers:
            await server.wait_closed()
        self._pipes.close()

    async def __aenter__(self) -> Middlebox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _start_janitor(self) -> None:
        if self._janitor is None:
            self._janitor = asyncio.get_running_loop().create_task(self._evict_idle())

    async def _evict_idle(self) -> None:
        period = max(0.05, min(self.config.idle_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(period)
            limit = time.monotonic() - self.config.idle_timeout
            for flow in [f for f in self._flows.values() if f.last_active < limit]:
                self._close_flow(flow)

    # --- SOCKS5 --------------------------------------------------------

    async def _serve_socks(self, stream: TcpStream) -> None:
        refusals = (socks5.Socks5Error, TimeoutError, ConnectionError, asyncio.IncompleteReadError)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                target = await self._socks_handshake(stream)
        except refusals as exc:
            log.info("socks: refused %s: %s", stream.get_extra_info("peername"), exc)
            stream.close()
            return
        await self._serve_flow(stream, target, socks=True)

    async def _socks_handshake(self, stream: TcpStream) -> Endpoint:
        async def write(data: bytes) -> None:
            stream.write(data)
            await stream.drain()

        request = await socks5.accept_connect_request(lambda: self._read_some(stream), write)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                request.host, request.port, type=socket.SOCK_STREAM
            )
            address = ipaddress.ip_address(infos[0][4][0])
        except (OSError, ValueError, IndexError):
            await write(socks5.reply(socks5.Reply.HOST_UNREACHABLE))
            raise socks5.Socks5Error(f"cannot resolve {request.host}") from None
        if not any(address in network for network in self._socks_allow):
            await write(socks5.reply(socks5.Reply.NOT_ALLOWED))
            raise socks5.Socks5Error(f"destination {address} is outside the allowed networks")
        return Endpoint(str(address), request.port)

    @staticmethod
    async def _read_some(stream: TcpStream) -> bytes:
        data = await stream.read(512)
        if not data:
            raise asyncio.IncompleteReadError(b"", None)
        return data

    # --- flows ---------------------------------------------------------

    def _admit(self, flow: Flow) -> None:
        while len(self._flows) >= self.config.max_flows:
            oldest = min(self._flows.values(), key=lambda f: f.last_active)
            log.info("flow table full: evicting flow %d", oldest.ident)
            self._close_flow(oldest)
        self._flows[flow.ident] = flow

    async def _serve_flow(self, stream: TcpStream, target: Endpoint, socks: bool = False) -> None:
        peer = stream.get_extra_info("peername") or ("?", 0)
        client = Endpoint(str(peer[0]), int(peer[1]))
        self._next_id += 1
        flow = Flow(self._next_id, FlowRecord(client, target), stream)
        self._admit(flow)
        try:
            await self._run_flow(flow, target, socks)
        except (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._close_flow(flow)

    async def _run_flow(self, flow: Flow, target: Endpoint, socks: bool) -> None:
        client = flow.client
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                server = await TcpStream.connect(target.host, target.port)
        except (OSError, TimeoutError):
            if socks:
                client.write(socks5.reply(socks5.Reply.CONNECTION_REFUSED))
                await client.drain()
            return
        flow.server = server
        if socks:
            local = server.get_extra_info("sockname")
            client.write(socks5.reply(socks5.Reply.SUCCEEDED, local[0], local[1]))
            await client.drain()
        classifier = FlowClassifier(flow.record.client, target)
        residual = self._policy().residual_decision(flow.record, self.clock.now())
        downstream = asyncio.get_running_loop().create_task(
            self._pump(flow, server, client, upstream=False, classifier=classifier)
        )
        flow.tasks.append(downstream)
        held = b""
        if residual is not None:
            record = classifier.finish()
            decision = residual
        else:
            record, held = await self._classify(flow, client, classifier)
            decision = self._policy().decide(record, self.clock.now(), self.rng)
        flow.record = record
        flow.decision = decision
        self._report(flow)
        effect = decision.effect
        if effect == "reset":
            self._reset(flow)
            return
        if effect == "drop":
            await flow.closed.wait()
            return
        if held:
            await self._forward(flow, server, held, upstream=True)
        if effect == "allow" and self.config.kernel_relay:
            await self._relay_allowed(flow, downstream)
            return
        await self._pump(flow, client, server, upstream=True, classifier=None)
        # Not "await downstream": closing the flow cancels it, and that is no
        # reason to cancel this handler.
        await self._join(downstream)

    @staticmethod
    async def _join(task: asyncio.Task[Any]) -> None:
        """Wait for a flow task; raise its error, but not its cancellation."""
        await asyncio.wait({task})
        if not task.cancelled():
            task.result()

    async def _relay_allowed(self, flow: Flow, downstream: asyncio.Task[bool]) -> None:
        """Copy an allowed flow both ways until it proves to be bulk, then hand it to the kernel."""
        assert flow.server is not None
        upstream = asyncio.get_running_loop().create_task(
            self._pump(flow, flow.client, flow.server, upstream=True, classifier=None))
        flow.tasks.append(upstream)  # closing the flow cancels it
        waiting = {upstream, downstream}
        while waiting:
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for pump in done:
                if pump.cancelled():
                    return  # the flow was closed
                if pump.result():  # raises a pump's error (a reset); True: the flow is bulk
                    # Stopping the other pump loses nothing: a byte it read has
                    # been written to the other side's transport, which detach() flushes.
                    for other in waiting:
                        other.cancel()
                        await self._join(other)
                    await self._relay_in_kernel(flow)
                    return

    async def _relay_in_kernel(self, flow: Flow) -> None:
        """Relay an allowed flow's sockets in the kernel until the flow ends."""
        assert flow.server is not None
        self.kernel_relayed += 1
        client_sock, client_pending, client_ended = await flow.client.detach()
        with client_sock:
            server_sock, server_pending, server_ended = await flow.server.detach()
            with server_sock:
                relay = asyncio.get_running_loop().create_task(splice_relay(
                    SpliceEnd(client_sock, client_pending, client_ended),
                    SpliceEnd(server_sock, server_pending, server_ended),
                    self._pipes,
                    lambda upstream, size: self._count(flow, size, upstream),
                ))
                flow.tasks.append(relay)  # closing the flow (eviction, shutdown) cancels it
                await self._join(relay)

    async def _classify(
        self, flow: Flow, client: TcpStream, classifier: FlowClassifier
    ) -> tuple[FlowRecord, bytes]:
        held = b""
        deadline = time.monotonic() + self.config.classify_timeout
        while not classifier.decided:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    data = await client.read(CHUNK)
            except TimeoutError:
                break
            if not data:
                break
            flow.last_active = time.monotonic()
            held += data
            classifier.feed_client(data)
        return classifier.finish(), held

    async def _pump(
        self,
        flow: Flow,
        source: TcpStream,
        target: TcpStream,
        *,
        upstream: bool,
        classifier: FlowClassifier | None,
    ) -> bool:
        """Relay ``source`` to ``target``; True if it stopped early for the kernel relay."""
        while True:
            data = await source.read(CHUNK)
            if not data:
                blocked = flow.decision is not None and flow.decision.effect in (
                    "drop", "reset", "stall"
                )
                if not blocked:
                    with contextlib.suppress(OSError):
                        if target.can_write_eof():
                            target.write_eof()
                return False
            flow.last_active = time.monotonic()
            if flow.decision is None and classifier is not None:
                classifier.feed_server(data)
            await self._forward(flow, target, data, upstream=upstream)
            if flow.bulk:
                return True

    async def _forward(
        self, flow: Flow, target: TcpStream, data: bytes, *, upstream: bool
    ) -> None:
        decision = flow.decision
        effect = decision.effect if decision is not None else "allow"
        if effect in ("drop", "reset"):
            await flow.closed.wait()
            return
        if decision is not None and effect != "allow":
            action = decision.action
            if effect == "stall":
                sent = flow.bytes_up + flow.bytes_down
                if sent >= action.stall_after_bytes:
                    await flow.closed.wait()
                    return
                data = data[: action.stall_after_bytes - sent]
            elif effect == "delay":
                await asyncio.sleep(action.ms / 1000)
            elif effect == "throttle":
                await self._throttle(flow, target, data, upstream)
                return
        self._count(flow, len(data), upstream)
        target.write(data)
        if (decision is not None and effect == "allow" and self.config.kernel_relay
                and flow.bytes_up + flow.bytes_down >= self.config.kernel_relay_after):
            flow.bulk = True
        await target.drain()

    async def _throttle(self, flow: Flow, target: TcpStream, data: bytes, upstream: bool) -> None:
        assert flow.decision is not None
        bucket = flow.buckets.get(upstream)
        if bucket is None:
            rate = kbit_to_bytes(flow.decision.action.rate_kbps)
            # A 50 ms burst (at least one packet) keeps the rate smooth at any scale.
            burst = max(1500.0, rate / 20)
            bucket = flow.buckets[upstream] = TokenBucket(rate, burst, time.monotonic())
        step = max(1, int(bucket.burst))
        for offset in range(0, len(data), step):
            piece = data[offset : offset + step]
            await asyncio.sleep(bucket.reserve(len(piece), time.monotonic()))
            self._count(flow, len(piece), upstream)
            target.write(piece)
            await target.drain()

    def _count(self, flow: Flow, size: int, upstream: bool) -> None:
        flow.last_active = time.monotonic()
        if upstream:
            flow.bytes_up += size
        else:
            flow.bytes_down += size
        if self.metrics is not None:
            self.metrics.bytes(upstream, size)

    def _reset(self, flow: Flow) -> None:
        for stream in (flow.client, flow.server):
            if stream is None:
                continue
            sock = stream.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.abort()
        self._close_flow(flow)

    def _close_flow(self, flow: Flow) -> None:
        if self._flows.pop(flow.ident, None) is None and flow.closed.is_set():
            return
        flow.closed.set()
        for task in flow.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        for stream in (flow.client, flow.server):
            if stream is not None:
                stream.close()

    def _report(self, flow: Flow) -> None:
        decision = flow.decision
        assert decision is not None
        record = flow.record
        if self.metrics is not None:
            self.metrics.flow(record.protocol, decision.effect, decision.rule or "default")
        if self._log is None:
            return
        entry: dict[str, Any] = {
            "time": self.clock.now(),
            "flow": flow.ident,
            "client": str(record.client),
            "server": str(record.server),
            "protocol": record.protocol,
            "sni": record.sni,
            "host": record.host,
            "ja3": record.ja3,
            "ja4": record.ja4,
            "fully_encrypted": record.fully_encrypted,
            "exemption": record.exemption,
            **decision.as_json(),
        }
        self._log.write(json.dumps(entry) + "\n")
        self._log.flush()
