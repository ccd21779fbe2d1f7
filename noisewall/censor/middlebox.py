"""The censor's middlebox: classifies each flow, asks the policy once, and enforces the answer.

Flows arrive by the ways in of :mod:`noisewall.censor.arrival` (port routes,
a SOCKS5 gateway, the transparent redirect in the path); this module does
the same with each. It connects to the server at once, lets server bytes
through while it reads the client's first bytes (a GFW sees packets pass
before it decides), holds the client's bytes until the flow is classified,
asks the policy for one decision, records it (:mod:`.decisionlog`), and
then moves bytes as the flow's :class:`~noisewall.censor.enforcement.FlowEnforcement`
says: what to forward, when, and when to hold or tear down.

Every socket is a :class:`~noisewall.tcp_stream.TcpStream`. Once an allowed
flow has moved ``kernel_relay_after`` bytes it has nothing left to inspect,
and the middlebox hands both sockets to the kernel
(:mod:`noisewall.censor.splicing`). The flow table is bounded
(``max_flows``; the least recently active flow is evicted) and idle flows are
closed after ``idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from noisewall.censor.arrival import Accept, Arrival, FlowListener
from noisewall.censor.arrival.routes import Route, route_arrivals
from noisewall.censor.arrival.socks import DEFAULT_SOCKS_ALLOW, socks_arrivals
from noisewall.censor.arrival.transparent import transparent_arrivals
from noisewall.censor.decisionlog import DecisionLog
from noisewall.censor.enforcement import SHAPED_READ, FlowEnforcement, Opening
from noisewall.censor.flowclassifier import FIRST_FLIGHT_WAIT, FlowClassifier
from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.metrics import CensorMetrics
from noisewall.censor.policy import Decision, Policy, ResidualTable
from noisewall.censor.splicing import AVAILABLE as SPLICE_AVAILABLE
from noisewall.censor.splicing import PipePool, SpliceEnd, splice_relay
from noisewall.clock import Clock, SystemClock
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import DEFAULT_LIMIT, TcpStream

__all__ = ["CHUNK", "DEFAULT_SOCKS_ALLOW", "Middlebox", "MiddleboxConfig", "Route"]

#: The most one read takes from a stream (big reads keep the per-byte Python cost low).
CHUNK = 1 << 20
log = logging.getLogger("noisewall.censor")
_LOST = (ConnectionError, OSError, TimeoutError, asyncio.IncompleteReadError)


@dataclass
class MiddleboxConfig:
    """Tunables of the relay (policy and clock are given separately)."""

    max_flows: int = 20000
    idle_timeout: float = 300.0
    #: Seconds to wait for a client's first bytes before deciding without them.
    classify_timeout: float = 2.0
    #: Seconds to wait for the rest of a first flight once it has begun.
    first_flight_timeout: float = FIRST_FLIGHT_WAIT
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
    """One relayed connection pair: its sockets, tasks and enforcement."""

    ident: int
    record: FlowRecord
    client: TcpStream
    enforcement: FlowEnforcement
    server: TcpStream | None = None
    last_active: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)


class Middlebox:
    """A running censor in front of real servers, reached by routes, SOCKS5 or a redirect."""

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
        #: Residual blocks belong to the middlebox, not to a policy: a reloaded policy
        #: (SIGHUP, a changed file, the next step of a timeline) keeps the live ones.
        self.residuals = ResidualTable()
        self.metrics = metrics
        self.decisions = DecisionLog(self.clock, decision_log, metrics)
        self.config = config or MiddleboxConfig()
        self._listeners: list[FlowListener] = []
        self._flows: dict[int, Flow] = {}
        self._next_id = 0
        self._janitor: asyncio.Task[None] | None = None
        self._pipes = PipePool()
        self._closing = False
        #: Flows handed to the kernel relay so far.
        self.kernel_relayed = 0

    # --- ways in ---------------------------------------------------------

    async def add_route(self, route: Route) -> Endpoint:
        """Listen for a route; returns the bound endpoint (port 0 picks one)."""
        return await self.add_listener(route.listen, route_arrivals(route.target))

    async def add_socks(self, listen: Endpoint) -> Endpoint:
        """Listen as a SOCKS5 gateway; returns the bound endpoint."""
        return await self.add_listener(
            listen, socks_arrivals(self.config.socks_allow, self.config.connect_timeout))

    async def add_transparent(self, listen: Endpoint) -> Endpoint:
        """Listen for flows an nftables redirect turns to us; returns the bound endpoint."""
        return await self.add_listener(listen, transparent_arrivals())

    async def add_listener(self, listen: Endpoint, accept: Accept) -> Endpoint:
        """Listen on ``listen``; ``accept`` says where each connection was going."""
        listener = await FlowListener(listen, accept, self.serve).start()
        self._listeners.append(listener)
        self._start_janitor()
        return listener.address

    # --- lifecycle -----------------------------------------------------

    @property
    def flow_count(self) -> int:
        """Flows currently in the table."""
        return len(self._flows)

    async def close(self) -> None:
        """Stop listening, close every flow, and return once all of their tasks have ended."""
        self._closing = True
        tasks: set[asyncio.Task[Any]] = set()
        if self._janitor is not None:
            self._janitor.cancel()
            tasks.add(self._janitor)
        for flow in list(self._flows.values()):
            tasks.update(flow.tasks)
            self._close_flow(flow)
        # A throttled or delayed flow's handler may be asleep for a while: the listeners cancel it.
        await asyncio.gather(*(listener.close() for listener in self._listeners))
        if tasks:
            await asyncio.wait(tasks)
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

    # --- flows ---------------------------------------------------------

    def decide(self, record: FlowRecord) -> Decision:
        """Decide on a flow the middlebox does not relay itself (a DNS query), and log it."""
        decision = self._policy().decide(record, self.clock.now(), self.rng, self.residuals)
        self.record_decision(record, decision)
        return decision

    def record_decision(self, record: FlowRecord, decision: Decision) -> None:
        """Log a decision made elsewhere (the kernel's, on a UDP flow) as a flow of ours."""
        self._next_id += 1
        self.decisions.decided(self._next_id, record, decision)

    def _admit(self, flow: Flow) -> None:
        while len(self._flows) >= self.config.max_flows:
            oldest = min(self._flows.values(), key=lambda f: f.last_active)
            log.info("flow table full: evicting flow %d", oldest.ident)
            self._close_flow(oldest)
        self._flows[flow.ident] = flow

    async def serve(self, arrival: Arrival) -> None:
        """Classify, decide and enforce one arriving flow; returns when it is over."""
        if self._closing:
            arrival.stream.close()
            return
        # Undecided, a flow buffers no more than a shaped one: a client that
        # pushes before its verdict waits in the kernel, not in our memory.
        arrival.stream.bound_buffers(SHAPED_READ)
        self._next_id += 1
        after = self.config.kernel_relay_after if self.config.kernel_relay else None
        flow = Flow(self._next_id, FlowRecord(arrival.client, arrival.target), arrival.stream,
                    FlowEnforcement(after))
        self._admit(flow)
        try:
            await self._run_flow(flow, arrival)
        except _LOST:
            pass
        finally:
            self._close_flow(flow)

    async def _run_flow(self, flow: Flow, arrival: Arrival) -> None:
        client, target = flow.client, arrival.target
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                server = await TcpStream.connect(target.host, target.port)
        except (OSError, TimeoutError):
            await arrival.refused()
            return
        server.bound_buffers(SHAPED_READ)
        flow.server = server
        local = server.get_extra_info("sockname")
        await arrival.connected(Endpoint(str(local[0]), int(local[1])))
        classifier = FlowClassifier(flow.record.client, target,
                                    self.config.first_flight_timeout)
        residual = self._policy().residual_decision(flow.record, self.clock.now(),
                                                       self.residuals)
        downstream = asyncio.get_running_loop().create_task(
            self._pump(flow, server, client, upstream=False, classifier=classifier))
        flow.tasks.append(downstream)
        held = b""
        if residual is not None:
            flow.record = classifier.finish()
            decision = residual
        else:
            flow.record, held = await self._classify(flow, classifier)
            decision = self._policy().decide(flow.record, self.clock.now(), self.rng,
                                              self.residuals)
        opening = flow.enforcement.start(decision)
        self.decisions.decided(flow.ident, flow.record, decision)
        if opening is Opening.RESET:
            self._reset(flow)
            return
        if opening is Opening.HOLD:
            await flow.closed.wait()
            return
        if flow.enforcement.passes_freely:  # big reads keep the per-byte cost low
            client.bound_buffers(DEFAULT_LIMIT)
            server.bound_buffers(DEFAULT_LIMIT)
        if held and not await self._forward(flow, server, held, upstream=True):
            return
        if flow.enforcement.kernel_eligible:
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
                    lambda upstream, size: self._moved_in_kernel(flow, size, upstream),
                ))
                flow.tasks.append(relay)  # closing the flow (eviction, shutdown) cancels it
                await self._join(relay)

    def _moved_in_kernel(self, flow: Flow, size: int, upstream: bool) -> None:
        flow.last_active = time.monotonic()
        flow.enforcement.count(size, upstream=upstream)
        self.decisions.moved(size, upstream=upstream)

    async def _classify(self, flow: Flow, classifier: FlowClassifier) -> tuple[FlowRecord, bytes]:
        held = b""
        opened = time.monotonic()
        while not classifier.decided:
            remaining = (classifier.deadline(opened, self.config.classify_timeout)
                         - time.monotonic())
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    data = await flow.client.read(CHUNK)
            except TimeoutError:
                break
            if not data:
                break
            flow.last_active = time.monotonic()
            held += data
            classifier.feed_client(data, flow.last_active)
        return classifier.finish(), held

    async def _pump(self, flow: Flow, source: TcpStream, target: TcpStream, *,
                    upstream: bool, classifier: FlowClassifier | None) -> bool:
        """Relay ``source`` to ``target``; True if it stopped early for the kernel relay."""
        enforcement = flow.enforcement
        while True:
            data = await source.read(enforcement.read_size(CHUNK))
            if not data:
                if enforcement.forwards_eof:
                    with contextlib.suppress(OSError):
                        if target.can_write_eof():
                            target.write_eof()
                return False
            flow.last_active = time.monotonic()
            if enforcement.decision is None and classifier is not None:
                classifier.feed_server(data)
            if not await self._forward(flow, target, data, upstream=upstream):
                return False
            if enforcement.to_kernel:
                return True

    async def _forward(self, flow: Flow, target: TcpStream, data: bytes, *,
                       upstream: bool) -> bool:
        """Write what the enforcement plans for ``data``; False if the flow is held until closed."""
        plan = flow.enforcement.forward(data, upstream=upstream, now=time.monotonic())
        for chunk in plan.chunks:
            wait = chunk.due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            flow.last_active = time.monotonic()
            target.write(chunk.data)
            self.decisions.moved(len(chunk.data), upstream=upstream)
            await target.drain()
        if plan.hold:
            await flow.closed.wait()
            return False
        return True

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
