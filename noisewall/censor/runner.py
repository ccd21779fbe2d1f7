"""``noisewall censor``: run the middlebox with a policy file that reloads live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from noisewall.censor.inpath import InPath
from noisewall.censor.metrics import CensorMetrics
from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import Policy, PolicyError, load_policy
from noisewall.clock import Clock, SystemClock
from noisewall.net import Network
from noisewall.records.endpoint import Endpoint

log = logging.getLogger("noisewall.censor")


class PolicyHolder:
    """The live policy: replaced on reload, kept when the new file is invalid.

    Flows already decided keep their decision; only new flows see a new policy.
    A reload parses the file in a worker thread, so that a policy of a hundred
    thousand entries does not stop every flow while it parses; the new policy
    replaces the old in one assignment on the event loop once it is whole.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy: Policy = load_policy(path)
        self._mtime = self._stat()
        self._reloading = asyncio.Lock()
        self._requested: set[asyncio.Task[bool]] = set()

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def __call__(self) -> Policy:
        return self.policy

    async def reload(self) -> bool:
        """Load the file again; on error log it and keep the current policy."""
        async with self._reloading:  # one parse at a time: the last one asked for wins
            self._mtime = self._stat()
            try:
                policy = await asyncio.to_thread(load_policy, self.path)
            except (PolicyError, OSError) as exc:
                log.error("policy reload failed, keeping the previous policy: %s", exc)
                return False
            self.policy = policy
        log.warning("policy reloaded from %s", self.path)
        return True

    def request_reload(self) -> None:
        """Reload in the background (the SIGHUP handler)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._requested.add(task)
        task.add_done_callback(self._requested.discard)

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file's modification time changes."""
        while True:
            await asyncio.sleep(interval)
            if self._stat() != self._mtime:
                await self.reload()


@dataclass
class CensorOptions:
    """What ``noisewall censor`` was asked to run."""

    policy: Path
    routes: list[Route]
    socks: Endpoint | None
    metrics: Endpoint | None
    decision_log: TextIO
    seed: int | None
    config: MiddleboxConfig
    #: In the path of this lab network (the caller runs us in its border namespace).
    network: Network | None = None


async def run_censor(options: CensorOptions, clock: Clock | None = None) -> None:
    """Run until cancelled (Ctrl-C or SIGTERM under :func:`run_until_interrupted`)."""
    holder = PolicyHolder(options.policy)
    metrics = CensorMetrics()
    middlebox = Middlebox(
        holder,
        clock=clock or SystemClock(),
        rng=random.Random(options.seed),  # noqa: S311 - simulation randomness
        decision_log=options.decision_log,
        metrics=metrics,
        config=options.config,
    )
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, holder.request_reload)
    watcher = loop.create_task(holder.watch())
    async with middlebox, contextlib.AsyncExitStack() as stack:
        if options.network is not None:
            inpath = await stack.enter_async_context(InPath(options.network, middlebox, holder))
            assert inpath.redirects is not None
            print(f"in the path of network {options.network.name}: TCP to "
                  f"{options.network.border_inside.address.ip}:{inpath.redirects.tcp_port}, "
                  f"DNS to port {inpath.redirects.dns_port}", file=sys.stderr, flush=True)
        for route in options.routes:
            bound = await middlebox.add_route(route)
            print(f"route {bound} -> {route.target}", file=sys.stderr, flush=True)
        if options.socks is not None:
            bound = await middlebox.add_socks(options.socks)
            print(f"socks5 on {bound}", file=sys.stderr, flush=True)
        if options.metrics is not None:
            bound = metrics.serve(options.metrics.host, options.metrics.port)
            print(f"metrics on {bound}", file=sys.stderr, flush=True)
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            watcher.cancel()
