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

from noisewall.censor.metrics import CensorMetrics
from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import Policy, PolicyError, load_policy
from noisewall.clock import Clock, SystemClock
from noisewall.records.endpoint import Endpoint

log = logging.getLogger("noisewall.censor")


class PolicyHolder:
    """The live policy: replaced on reload, kept when the new file is invalid.

    Flows already decided keep their decision; only new flows see a new policy.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy: Policy = load_policy(path)
        self._mtime = self._stat()

    def _stat(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def __call__(self) -> Policy:
        return self.policy

    def reload(self) -> bool:
        """Load the file again; on error log it and keep the current policy."""
        self._mtime = self._stat()
        try:
            self.policy = load_policy(self.path)
        except (PolicyError, OSError) as exc:
            log.error("policy reload failed, keeping the previous policy: %s", exc)
            return False
        log.warning("policy reloaded from %s", self.path)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file's modification time changes."""
        while True:
            await asyncio.sleep(interval)
            if self._stat() != self._mtime:
                self.reload()


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


async def run_censor(options: CensorOptions, clock: Clock | None = None) -> None:
    """Run until cancelled (Ctrl-C)."""
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
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, holder.reload)
    watcher = loop.create_task(holder.watch())
    async with middlebox:
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
            await asyncio.Event().wait()
        finally:
            watcher.cancel()
