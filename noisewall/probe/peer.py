"""The probe peer: an account that answers every message with a delivered receipt at once.

It stays connected over the setup path (uncensored) for the prober's life,
so a text probe's round trip is: the probe's path up, the server, the peer,
the server, the probe's path down. The receipt is the app's end-to-end
``receipt`` message, sent as soon as the message is decrypted (the app
batches receipts; a probe must not wait for that).
"""

from __future__ import annotations

import asyncio
import logging

from noisewall.cancellation import cancel_and_wait
from noisewall.clock import Clock
from noisewall.messenger import payloads
from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.messages import Ack, Delivered, Message, parse_push
from noisewall.noise import NoiseError
from noisewall.probe.accounts import ProbeAccount, open_payload, seal
from noisewall.probe.settings import ProbeSettings

log = logging.getLogger("noisewall.probe")

RECONNECT_DELAY = 0.2


class ProbePeer:
    """Runs the answering loop in a task; :meth:`close` stops it."""

    def __init__(self, account: ProbeAccount, settings: ProbeSettings, clock: Clock) -> None:
        self.account = account
        self.settings = settings
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        """Start answering; returns once the peer is connected (or raises after a timeout)."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        timeout = self.settings.connect_timeout + self.settings.phase_timeout
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def close(self) -> None:
        """Stop answering and disconnect."""
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                connection = await ChatConnection.open(
                    *self.settings.server, self.account.static, self.account.server_key,
                    framing=self.settings.framing,
                    timeout=self.settings.connect_timeout + self.settings.phase_timeout,
                    socks5=self.settings.setup_socks5)
            except (OSError, NoiseError, TimeoutError) as exc:
                log.warning("probe peer cannot connect: %s", type(exc).__name__)
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            self._connected.set()
            try:
                await self._answer(connection)
            except (OSError, NoiseError, TimeoutError, ChatError) as exc:
                log.info("probe peer connection lost: %s", type(exc).__name__)
            finally:
                await connection.close()
            await asyncio.sleep(RECONNECT_DELAY)

    async def _answer(self, connection: ChatConnection) -> None:
        while True:
            push = parse_push(await connection.pushes.get())
            if not isinstance(push, Message):
                return  # the connection closed
            payload = await open_payload(self.account, push)
            await connection.notify(Delivered([push.queue_id]))
            if payload is None or payload["kind"] == "receipt":
                continue
            receipt = payloads.stamped(payloads.receipt("delivered", [str(payload["id"])]),
                                       self.clock.now())
            request = await seal(self.account, connection, push.sender, receipt,
                                 self.settings.phase_timeout)
            await connection.call(request, Ack, self.settings.phase_timeout)
