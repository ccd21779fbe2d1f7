"""The probe's Python API: measure every feature on every vantage path, one round at a time.

.. code-block:: python

    settings = ProbeSettings(server=("127.0.0.1", 5222),
                             vantages=[Vantage(label="direct", socks5=("127.0.0.1", 1080)),
                                       Vantage(label="control")])
    async with Prober(settings, Path("probe-state"), clock) as prober:
        for n in range(10):
            for measurement in await prober.run_round(n):
                out.write(json.dumps(measurement) + "\\n")
            clock.advance(3600)

Opening a prober registers its accounts (over the setup path) and connects
the probe peer; each round then measures all features on all vantages at
once and returns one OONI-format measurement per vantage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from noisewall.clock import Clock, SystemClock
from noisewall.probe.accounts import ProbeAccount, account_name
from noisewall.probe.failures import failure_string
from noisewall.probe.lifecycle import Started
from noisewall.probe.measurement import MeasurementMeta, Trace, build_measurement, report_id
from noisewall.probe.media import CredentialSession, MediaCredentials, MediaProbe, sample_file
from noisewall.probe.messaging import ChatProbe, message_round_trip, register
from noisewall.probe.peer import ProbePeer
from noisewall.probe.settings import ProbeSettings, Vantage
from noisewall.probe.tcp import tcp_connects
from noisewall.records.endpoint import Endpoint
from noisewall.records.measurement import FeatureResult
from noisewall.records.names import MEDIA_FEATURES

E2E_FEATURES = ("text", "location")


class Prober(Started):
    """Probes the messenger from a state folder (accounts, samples) with an injected clock."""

    def __init__(self, settings: ProbeSettings, state_dir: Path,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.clock: Clock = clock or SystemClock()
        self._accounts: dict[tuple[str, str], ProbeAccount] = {}
        self._peer: ProbePeer | None = None
        self._credentials: CredentialSession | None = None
        self._meta: MeasurementMeta | None = None
        self._samples: dict[str, Path] = {}

    # --- lifecycle -----------------------------------------------------

    def _account(self, label: str, role: str) -> ProbeAccount:
        key = (label, role)
        if key not in self._accounts:
            name = account_name(self.settings.account_prefix, label, role)
            self._accounts[key] = ProbeAccount(self.state_dir / "accounts" / name, name)
        return self._accounts[key]

    async def start(self) -> None:
        """Register the accounts, connect the peer, make the samples."""
        s = self.settings
        features = set(s.features)
        registrations: list[Awaitable[None]] = []
        if features & set(E2E_FEATURES):
            peer = self._account("", "peer")
            registrations.append(peer.ensure_registered(s, e2e=True))
        if features & set(MEDIA_FEATURES):
            media = self._account("", "media")
            registrations.append(media.ensure_registered(s, e2e=False))
            self._credentials = CredentialSession(media, s)
        for vantage in s.vantages:
            for feature in features & {*E2E_FEATURES, "register"}:
                account = self._account(vantage.label, feature)
                registrations.append(account.ensure_registered(s, e2e=feature != "register"))
        await asyncio.gather(*registrations)
        if features & set(E2E_FEATURES):
            self._peer = ProbePeer(self._account("", "peer"), s, self.clock)
            await self._peer.start()
        for feature in features & set(MEDIA_FEATURES):
            size = getattr(s.samples, feature)
            self._samples[feature] = await asyncio.to_thread(
                sample_file, self.state_dir / "samples", feature, size)
        (self.state_dir / "scratch").mkdir(parents=True, exist_ok=True)
        now = self.clock.now()
        self._meta = MeasurementMeta(report_id(now, s.probe_asn), now, s.probe_asn, s.probe_cc,
                                     s.probe_ip, s.probe_network_name)

    async def close(self) -> None:
        """Disconnect and close the accounts' databases."""
        if self._peer is not None:
            await self._peer.close()
        if self._credentials is not None:
            await self._credentials.close()
        for account in self._accounts.values():
            account.close()
        self._accounts.clear()

    # --- rounds --------------------------------------------------------

    async def run_round(self, round_no: int) -> list[dict[str, Any]]:
        """Measure every feature on every vantage now; one measurement per vantage."""
        if self._meta is None:
            raise RuntimeError("start the prober first (async with Prober(...))")
        start = self.clock.now()
        credentials: MediaCredentials | str | None = None
        if self._credentials is not None:
            try:
                credentials = await self._credentials.fetch()
            except Exception as exc:  # any failure of the setup path: media cannot be probed
                credentials = failure_string(exc)
        traces = {v.label: Trace() for v in self.settings.vantages}
        results: dict[str, dict[str, FeatureResult]] = {v.label: {} for v in self.settings.vantages}
        began = time.monotonic()
        # Media transfers are heavy on the CPU; timing the chat channel while they run
        # would measure this machine, not the path. So: chat features first, then media.
        for stage in (self._chat_features(), self._media_features()):
            jobs = [(v.label, feature, self._probe(feature, v, traces[v.label], credentials))
                    for v in self.settings.vantages for feature in stage]
            done = await asyncio.gather(*(job for _, _, job in jobs))
            for (label, feature, _), result in zip(jobs, done, strict=True):
                results[label][feature] = result
        runtime = time.monotonic() - began
        return [build_measurement(self._meta, vantage=v.label, round_no=round_no, start=start,
                                  runtime=runtime,
                                  results={f: results[v.label][f] for f in self.settings.features},
                                  trace=traces[v.label])
                for v in self.settings.vantages]

    def _chat_features(self) -> list[str]:
        return [f for f in self.settings.features if f not in MEDIA_FEATURES]

    def _media_features(self) -> list[str]:
        return [f for f in self.settings.features if f in MEDIA_FEATURES]

    def _probe(self, feature: str, vantage: Vantage, trace: Trace,
               credentials: MediaCredentials | str | None) -> Awaitable[FeatureResult]:
        s = self.settings
        if feature in E2E_FEATURES or feature == "register":
            probe = ChatProbe(s, vantage, self._account(vantage.label, feature), trace,
                              self.clock)
            if feature == "register":
                return register(probe)
            return message_round_trip(probe, self._account("", "peer").name, feature)
        if feature == "tcp":
            return tcp_connects(self._tcp_endpoints(credentials), vantage, trace,
                                s.connect_timeout)
        if not isinstance(credentials, MediaCredentials):
            return _not_measured(credentials or "unknown_failure: no media credentials")
        media = MediaProbe(s, vantage, trace, feature, self._samples[feature],
                           self.state_dir / "scratch")
        return media.run(credentials)

    def _tcp_endpoints(self, credentials: MediaCredentials | str | None) -> list[Endpoint]:
        if self.settings.tcp_endpoints:
            return list(self.settings.tcp_endpoints)
        endpoints = [self.settings.server]
        if isinstance(credentials, MediaCredentials):
            endpoints.append(credentials.endpoint)
        return endpoints


async def _not_measured(failure: str) -> FeatureResult:
    """A media feature whose credentials could not be fetched (the setup path failed)."""
    result = FeatureResult()
    result.fail(failure, None)
    return result
