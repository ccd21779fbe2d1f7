"""The lab's running parts in one process: messenger server, censor, and their shutdown.

Everything listens on loopback, on fixed addresses (so scenario rules can
name them) and system-chosen ports (so runs never collide):

* chat (NoiseSocket, Noise Pipes) on :data:`CHAT_HOST`,
* media (HTTPS, TLS 1.3) on :data:`MEDIA_HOST`, under the scenario's public
  name if it has one (its clients send it as SNI: rules can match ``sni``),
* tunnel servers on :data:`TUNNEL_HOST`,
* the censor's SOCKS5 gateway and routes on 127.0.0.1.

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

from noisewall.censor.middlebox import Middlebox, MiddleboxConfig, Route
from noisewall.censor.policy import Policy
from noisewall.clock import ManualClock
from noisewall.messenger.mediaserver import MediaServer
from noisewall.messenger.server import ChatServer
from noisewall.records.endpoint import Endpoint

__all__ = ["CENSOR_HOST", "CHAT_HOST", "MEDIA_HOST", "TUNNEL_HOST", "LabServices"]

CHAT_HOST = "127.0.10.1"
MEDIA_HOST = "127.0.10.2"
TUNNEL_HOST = "127.0.10.3"
CENSOR_HOST = "127.0.0.1"
T = TypeVar("T")
#: Flows the lab's censor may hold at once; far above what a round opens.
_MAX_FLOWS = 4096


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where the running services listen."""

    chat: Endpoint
    media_url: str
    media_fingerprint: bytes
    media_name: str | None
    socks: Endpoint


class LabServices:
    """Messenger server + censor, started by ``async with`` and stopped on exit (also on error
    or cancellation).

    ``data_dir`` holds the server's key, database and blobs; ``decision_log``
    receives the censor's per-flow JSON lines; ``media_name`` is the media
    server's public host name (None: none, clients send no SNI).
    """

    def __init__(self, data_dir: Path, policy: Policy, clock: ManualClock, *,
                 decision_log: TextIO | None = None, classify_timeout: float = 0.5,
                 media_name: str | None = None) -> None:
        self.data_dir = data_dir
        self.media_name = media_name
        self.policy = policy
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

    async def _start(self) -> None:
        chat = await self._stack.enter_async_context(ChatServer(self.data_dir / "server"))
        media = MediaServer(self.data_dir / "server" / "media", chat.authorize_media,
                            server_name=self.media_name)
        media_port = await media.start(MEDIA_HOST, 0)
        self._stack.push_async_callback(media.close)
        media_url = f"https://{MEDIA_HOST}:{media_port}"
        chat.media = media.announcement(media_url)
        chat_port = await chat.start(CHAT_HOST, 0)
        middlebox = Middlebox(
            lambda: self.policy,
            clock=self.clock,
            rng=self.rng,
            decision_log=self._decision_log,
            config=MiddleboxConfig(max_flows=_MAX_FLOWS, idle_timeout=60.0,
                                   classify_timeout=self._classify_timeout,
                                   connect_timeout=5.0),
        )
        await self._stack.enter_async_context(middlebox)
        self.middlebox = middlebox
        socks = await middlebox.add_socks(Endpoint(CENSOR_HOST, 0))
        self.addresses = Addresses(Endpoint(CHAT_HOST, chat_port), media_url,
                                   media.fingerprint, media.server_name, socks)

    async def route(self, target: Endpoint) -> Endpoint:
        """A censored port-forward to ``target`` (a tunnel server); returns where to connect."""
        assert self.middlebox is not None, "start the services first"
        return await self.middlebox.add_route(Route(Endpoint(CENSOR_HOST, 0), target))

    def reseed(self, seed: int, round_index: int) -> None:
        """Make the censor's draws in round ``round_index`` a function of the seed alone."""
        self.rng.seed(f"noisewall-lab:{seed}:{round_index}")

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await ``callback`` when the services stop (before the parts started earlier)."""
        self._stack.push_async_callback(callback)

    async def enter(self, part: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Run another part (a tunnel server or client) until the services stop."""
        return await self._stack.enter_async_context(part)
