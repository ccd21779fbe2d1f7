"""The scenario's program vantages: real, unmodified programs measured each round.

A program vantage's command names the lab's servers with placeholders
(:data:`~noisewall.lab.scenario.PROGRAM_PLACEHOLDERS`). On loopback they are
censored routes to the servers, so the program crosses the censor without a
proxy setting; in a lab network they are the servers' own addresses, and the
program runs in the inside namespace (``ip netns exec``, so it also uses the
lab's resolver and trust store) with the censor in the path. Each round every
program runs at once; its outcome is one OONI-format measurement
(:func:`noisewall.probe.program.program_measurement`) that the observatory
detects and the lab scores like any probe's. A program that is missing or
hangs is a failed measurement, and the run goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from noisewall.clock import Clock
from noisewall.lab.scenario import Scenario, Vantage
from noisewall.lab.services import LabServices
from noisewall.net import Side, tools
from noisewall.probe.measurement import MeasurementMeta, report_id
from noisewall.probe.program import expand, program_measurement, run_program
from noisewall.records.endpoint import Endpoint

__all__ = ["ProgramVantages"]


class ProgramVantages:
    """The program vantages of ``scenario``, ready to run once :meth:`prepare` has placed them."""

    def __init__(self, scenario: Scenario, services: LabServices, clock: Clock) -> None:
        self.vantages = tuple(v for v in scenario.vantages if v.path == "program")
        self._scenario = scenario
        self._services = services
        self._clock = clock
        self._values: dict[str, str] = {}
        self._prefix: tuple[str, ...] = ()
        now = clock.now()
        self._meta = MeasurementMeta(report_id(now, scenario.asn), now, scenario.asn,
                                     scenario.cc, "127.0.0.1", scenario.network_name)

    async def prepare(self) -> None:
        """Fill the placeholders: routes across the censor (loopback) or the servers (network)."""
        if not self.vantages:
            return
        services = self._services
        addresses = services.addresses
        assert addresses is not None, "start the services first"
        media_host, media_port = addresses.media_url.removeprefix("https://").rsplit(":", 1)
        chat = await services.route(addresses.chat)
        media = await services.route(Endpoint(media_host, int(media_port)))
        self._values = {
            "chat_host": chat.host, "chat_port": str(chat.port),
            "media_host": media.host, "media_port": str(media.port),
            "media_name": addresses.media_name or media.host,
        }
        network = services.sides.network
        if network is not None:
            self._prefix = tuple(tools.netns_exec_argv(network.namespace(Side.INSIDE), []))

    async def run_round(self, round_no: int) -> list[dict[str, Any]]:
        """Every program vantage once, all at once; one measurement each."""
        start = self._clock.now()
        return list(await asyncio.gather(*(self._measure(v, round_no, start)
                                           for v in self.vantages)))

    async def _measure(self, vantage: Vantage, round_no: int, start: float) -> dict[str, Any]:
        assert vantage.feature is not None  # the scenario validator requires one
        outcome = await run_program(expand(vantage.command, self._values),
                                    timeout=vantage.timeout, prefix=self._prefix)
        return program_measurement(self._meta, outcome, vantage=vantage.name,
                                   feature=vantage.feature, round_no=round_no, start=start)
