"""The lab's running parts: messenger server, censor, and their shutdown.

On loopback everything runs in this process's loop, on fixed addresses (so
scenario rules can name them) and system-chosen ports (so runs never
collide); in a lab network (``--net``) the same parts run on the loops of
:class:`~noisewall.lab.sides.LabSides`, each in its namespace, at the
addresses of :mod:`noisewall.lab.addressplan`:

* chat (NoiseSocket, Noise Pipes) on the plan's chat address,
* media (HTTPS, TLS 1.3) on its media address, under the scenario's public
  name if it has one (its clients send it as SNI: rules can match ``sni``),
* tunnel servers on its tunnel address,
* the censor: on loopback a SOCKS5 gateway and port routes on 127.0.0.1; in a
  network the in-path censor in the border, which takes every flow from the
  inside to the outside, with no proxy anywhere. There the probes' setup
  traffic and the control vantage use the **management gateway**, a SOCKS5
  gateway on the border's inside address that relays without judging (the
  censor's redirect leaves traffic to the border itself alone).

The censor reads the lab's simulated clock and the scenario's policy, with a
random generator the lab reseeds each round so a seed gives the same flaky
and sampled decisions whatever order concurrent flows arrive in.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO, TypeVar

from noisewall.censor.inpath import InPath
from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import Policy
from noisewall.clock import ManualClock
from noisewall.lab.addressplan import LOOPBACK_PLAN, AddressPlan, network_plan, relocate_policy
from noisewall.lab.sides import LabSides
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer
from noisewall.net import Side
from noisewall.records.endpoint import Endpoint

__all__ = ["Addresses", "LabServices"]

T = TypeVar("T")
#: Flows the lab's censor may hold at once; far above what a round opens.
_MAX_FLOWS = 4096


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where the running services listen, and how probes reach them."""

    chat: Endpoint
    media_url: str
    media_fingerprint: bytes
    media_name: str | None
    censored_socks: Endpoint | None
    """The censor's SOCKS5 gateway for the censored path; None in a network (in the path)."""
    uncensored_socks: Endpoint | None
    """The setup path and control vantage: None on loopback (direct), else the management
    gateway."""


class LabServices:
    """Messenger server + censor, started by ``async with`` and stopped on exit (also on error
    or cancellation).

    ``data_dir`` holds the server's key, database and blobs; ``decision_log``
    receives the censor's per-flow JSON lines; ``media_name`` is the media
    server's public host name (None: none, clients send no SNI); ``sides``
    places the parts (default: loopback, all on the caller's loop).
    """

    def __init__(self, data_dir: Path, policy: Policy, clock: ManualClock, *,
                 decision_log: TextIO | None = None, classify_timeout: float = 0.5,
                 media_name: str | None = None, sides: LabSides | None = None) -> None:
        self.data_dir = data_dir
        self.media_name = media_name
        self.sides = sides if sides is not None else LabSides(None)
        network = self.sides.network
        self.plan: AddressPlan = LOOPBACK_PLAN if network is None else network_plan(network)
        self.policy = relocate_policy(policy, self.plan)
        self.clock = clock
        self.rng = random.Random()  # noqa: S311 - censorship simulation, not crypto
        self._decision_log = decision_log
        self._classify_timeout = classify_timeout
        self._stack = contextlib.AsyncExitStack()
        self.middlebox: Middlebox | None = None
        self.addresses: Addresses | None = None

    async def __aenter__(self) -> LabServices:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.aclose()

    def _middlebox(self, policy: Callable[[], Policy], decision_log: TextIO | None) -> Middlebox:
        return Middlebox(
            policy, clock=self.clock, rng=self.rng, decision_log=decision_log,
            config=MiddleboxConfig(max_flows=_MAX_FLOWS, idle_timeout=60.0,
                                   classify_timeout=self._classify_timeout,
                                   connect_timeout=5.0,
                                   socks_allow=("127.0.0.0/8", str(self.plan.block))),
        )

    async def _start(self) -> None:
        plan, sides = self.plan, self.sides
        chat = ChatServer(self.data_dir / "server", listen=Endpoint(plan.chat, 0))
        media = await self.enter(MediaServer(self.data_dir / "server" / "media",
                                             chat.authorize_media, server_name=self.media_name,
                                             listen=Endpoint(plan.media, 0)))
        media_url = f"https://{plan.media}:{media.address.port}"
        chat.media = media.announcement(media_url)  # before it listens: every client hears
        await self.enter(chat)
        middlebox = await self.enter(self._middlebox(lambda: self.policy, self._decision_log),
                                     Side.BORDER)
        self.middlebox = middlebox
        gateway = Endpoint(plan.gateway, 0)
        if sides.network is None:
            censored: Endpoint | None = await sides.run(Side.BORDER, middlebox.add_socks(gateway))
            uncensored = None
        else:
            await self.enter(InPath(sides.network, middlebox, lambda: self.policy), Side.BORDER)
            management = await self.enter(self._middlebox(lambda: _ALLOW_ALL, None),
                                          Side.BORDER)
            censored = None
            uncensored = await sides.run(Side.BORDER, management.add_socks(gateway))
        self.addresses = Addresses(chat.address, media_url, media.fingerprint,
                                   media.server_name, censored, uncensored)

    async def route(self, target: Endpoint) -> Endpoint:
        """Where a client reaches ``target`` (a tunnel server) across the censor.

        On loopback a censored port-forward; in a network the server itself (the
        censor is in the path).
        """
        assert self.middlebox is not None, "start the services first"
        if self.sides.in_network:
            return target
        return await self.sides.run(Side.BORDER, self.middlebox.add_route(
            Route(Endpoint(self.plan.gateway, 0), target)))

    def reseed(self, seed: int, round_index: int) -> None:
        """Make the censor's draws in round ``round_index`` a function of the seed alone."""
        self.rng.seed(f"noisewall-lab:{seed}:{round_index}")

    def on_close(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Await ``callback`` when the services stop (before the parts started earlier)."""
        self._stack.push_async_callback(callback)

    async def enter(self, part: contextlib.AbstractAsyncContextManager[T],
                    side: Side = Side.OUTSIDE) -> T:
        """Run another part on ``side`` (a server, a tunnel, a gateway) until the services stop."""
        return await self.sides.enter(self._stack, side, part)


_ALLOW_ALL = Policy(source="<lab management gateway>", description="relays without judging")
