"""The OONI-style TCP connect probe: can each configured endpoint be reached at all?"""

from __future__ import annotations

from noisewall.probe.measurement import Trace
from noisewall.probe.phases import PhaseFailure, close_writer, measure, open_path
from noisewall.probe.settings import Vantage
from noisewall.records.endpoint import Endpoint
from noisewall.records.measurement import FeatureResult


async def tcp_connects(endpoints: list[Endpoint], vantage: Vantage, trace: Trace,
                       timeout: float) -> FeatureResult:
    """Connect to every endpoint in turn (through the vantage's proxy, if any).

    Failed if any connect fails (the first failure is the feature's);
    ``t_connect`` is the slowest successful connect.
    """
    result = FeatureResult()
    tags = [vantage.label, "tcp"]

    async def body() -> None:
        first: PhaseFailure | None = None
        for endpoint in endpoints:
            t0 = trace.now()
            try:
                _, writer = await open_path(endpoint, vantage.socks5, trace,
                                            tid=trace.transaction(), tags=tags, timeout=timeout)
            except PhaseFailure as exc:
                first = first or exc
                continue
            result.t_connect = max(result.t_connect or 0.0, trace.now() - t0)
            await close_writer(writer)
        if first is not None:
            raise first

    return await measure(body(), result)
