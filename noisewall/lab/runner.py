"""Run a scenario end to end: services, probes on the simulated clock, analysis, scoring.

:func:`run_lab` starts the messenger server, the censor (with the scenario's
timeline as its policy), a tunnel per tunnel vantage and the probes, all in
this process: on loopback, or (``LabOptions.net``) in a lab network of its own
made for the run, the servers outside, the censor in the path at the border
and the probes inside (:mod:`noisewall.lab.sides`); replays the scenario one
probe round at a time on the simulated clock; then stores the measurements in
ClickHouse (chDB), runs the
observatory's analysis, scores it against the ground truth and writes the
report. Everything it started is stopped on return, on error and on
cancellation (Ctrl-C).

Files written into ``out``: ``measurements.jsonl`` (OONI format, one per
round and vantage), ``measurements.chdb`` (the observatory's store),
``censor-decisions.jsonl`` (the censor's per-flow log), ``analysis.json``
(scenario, ground truth, detected events, score, arms race) and
``report.html``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisewall.clock import ManualClock
from noisewall.lab.addressplan import client_sources, network_plan, place_servers
from noisewall.lab.groundtruth import TruthEvent, ground_truth, iso
from noisewall.lab.programs import ProgramVantages
from noisewall.lab.scenario import Scenario
from noisewall.lab.schedule import Round, Schedule
from noisewall.lab.scoring import SCORE_COLUMNS, Score, score
from noisewall.lab.services import LabServices
from noisewall.lab.sides import LabSides
from noisewall.lab.thirdparty import shadowsocks_race
from noisewall.lab.tunnels import LabTunnel, start_tunnel
from noisewall.lab.wechat import start_keyword_probe, wechat_truth
from noisewall.net import Network, Side, temporary_network_async
from noisewall.observatory.episodes import Event, analyze
from noisewall.observatory.filtered import FilteredEvent
from noisewall.observatory.keyword_store import stored_filtered_events
from noisewall.observatory.report_html import GroundTruthBand, ReportTable, write_html_report
from noisewall.observatory.store import MeasurementStore, remove_store
from noisewall.probe.keyword import KeywordProber
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes
from noisewall.probe.settings import Vantage as ProbeVantage
from noisewall.tunnel.armsrace import BlockingResult, loopback_sources

__all__ = ["LabOptions", "LabResult", "memory_folder", "run_lab"]

log = logging.getLogger("noisewall.lab")

#: Files in the output folder.
MEASUREMENTS = "measurements.jsonl"
STORE = "measurements.chdb"
DECISIONS = "censor-decisions.jsonl"
ANALYSIS = "analysis.json"
REPORT = "report.html"


@dataclass(frozen=True)
class LabOptions:
    """How to run a scenario.

    ``interval`` overrides the scenario's probe interval (a coarser one runs
    quicker with the same timeline). The timeouts are real seconds: a dropped
    flow costs ``phase_timeout`` per round, so they are short on loopback.
    """

    out: Path
    seed: int = 0
    interval: float | None = None
    connect_timeout: float = 1.5
    phase_timeout: float = 1.5
    transfer_timeout: float = 4.0
    arms_race: bool = True
    net: bool = False
    """Run in a lab network (root, network namespaces) instead of on loopback."""
    samples: SampleSizes = field(default_factory=lambda: SampleSizes(
        text=4096, photo=12 * 1024, video=16 * 1024, voice=8 * 1024))


@dataclass
class LabResult:
    """What a run produced."""

    scenario: Scenario
    schedule: Schedule
    seed: int
    truth: list[TruthEvent]
    events: list[Event | FilteredEvent]
    score: Score
    arms_race: list[BlockingResult]
    files: dict[str, Path]
    elapsed: float
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "loopback"
    """Where it ran: ``loopback``, or ``lab network`` (namespaces, the censor in the path)."""

    def as_json(self) -> dict[str, Any]:
        """The analysis file's content."""
        s = self.scenario
        return {
            "scenario": {"name": s.name, "path": s.path, "description": s.description,
                         "start": iso(s.start), "end": iso(s.end),
                         "interval": self.schedule.interval, "rounds": len(self.schedule),
                         "network": s.network_name, "asn": s.asn, "cc": s.cc,
                         "media_name": s.media_name,
                         "features": list(s.features),
                         "vantages": [v.name for v in s.vantages]},
            "seed": self.seed,
            "mode": self.mode,
            "elapsed_s": round(self.elapsed, 2),
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "ground_truth": [e.as_json() for e in self.truth],
            "events": [e.as_json() for e in self.events],
            "score": self.score.as_json(),
            "arms_race": [r.as_json() for r in self.arms_race],
            "files": {k: str(v) for k, v in self.files.items()},
        }


def _probe_settings(scenario: Scenario, services: LabServices, tunnels: dict[str, LabTunnel],
                    options: LabOptions) -> ProbeSettings:
    addresses = services.addresses
    assert addresses is not None
    vantages = []
    for vantage in scenario.vantages:
        if vantage.path == "program":
            continue
        if vantage.path == "censor":
            socks5 = addresses.censored_socks
        elif vantage.path == "direct":
            socks5 = addresses.uncensored_socks
        else:
            socks5 = tunnels[vantage.name].socks
        vantages.append(ProbeVantage(label=vantage.name, socks5=socks5))
    return ProbeSettings(
        server=addresses.chat,
        features=scenario.features,
        vantages=tuple(vantages),
        setup_socks5=addresses.uncensored_socks,
        connect_timeout=options.connect_timeout,
        phase_timeout=options.phase_timeout,
        transfer_timeout=options.transfer_timeout,
        samples=options.samples,
        probe_asn=scenario.asn,
        probe_cc=scenario.cc,
        probe_network_name=scenario.network_name,
    )


async def _replay(scenario: Scenario, schedule: Schedule, options: LabOptions, state: Path,
                  on_round: Callable[[Round], None] | None, *,
                  timings: dict[str, float]) -> tuple[list[dict[str, Any]],
                                                                     list[BlockingResult]]:
    if not options.net:
        return await _replay_in(None, scenario, schedule, options, state, on_round=on_round,
                                timings=timings)
    hosts = {scenario.media_name: None} if scenario.media_name else {}
    async with temporary_network_async(f"lab{os.getpid() % 100_000}", hosts) as network:
        return await _replay_in(network, scenario, schedule, options, state,
                                on_round=on_round, timings=timings)


async def _replay_in(network: Network | None, scenario: Scenario, schedule: Schedule,
                     options: LabOptions, state: Path, *,
                     on_round: Callable[[Round], None] | None,
                     timings: dict[str, float]) -> tuple[list[dict[str, Any]],
                                                         list[BlockingResult]]:
    clock = ManualClock(scenario.start)
    measurements: list[dict[str, Any]] = []
    arms_race: list[BlockingResult] = []
    out = options.out
    began = time.monotonic()
    with (out / DECISIONS).open("w", encoding="utf-8") as decisions, \
            (out / MEASUREMENTS).open("w", encoding="utf-8") as lines, \
            LabSides(network) as sides:
        if network is not None:
            place_servers(network, network_plan(network))
        async with LabServices(state, scenario.policy, clock, decision_log=decisions,
                               media_name=scenario.media_name, sides=sides) as services:
            tunnels: dict[str, LabTunnel] = {}
            for vantage in scenario.vantages:
                if vantage.transport is not None:
                    tunnels[vantage.name] = await start_tunnel(
                        services, vantage.transport, options.phase_timeout)
            settings = _probe_settings(scenario, services, tunnels, options)
            prober = await services.enter(Prober(settings, state / "probe", clock), Side.INSIDE)
            keywords = None if scenario.wechat is None else await start_keyword_probe(
                services, scenario, scenario.wechat, state, clock)
            programs = ProgramVantages(scenario, services, clock)
            await programs.prepare()
            for round_ in schedule.run(clock):
                services.reseed(options.seed, round_.index)
                # Independent vantages: their tunnels reconnect at once.
                await asyncio.gather(*(tunnel.reconnect(scenario.vantage(name).background)
                                       for name, tunnel in tunnels.items()))
                probed, ran, filtered = await asyncio.gather(
                    sides.run(Side.INSIDE, prober.run_round(round_.index)),
                    programs.run_round(round_.index),
                    _keyword_round(keywords, round_.index))
                for measurement in [*probed, *ran, *filtered]:
                    measurements.append(measurement)
                    lines.write(json.dumps(measurement, sort_keys=True) + "\n")
                lines.flush()
                if on_round is not None:
                    on_round(round_)
            timings["rounds"] = time.monotonic() - began
            if options.arms_race and scenario.arms_race_connections:
                arms_race = await _arms_race(scenario, services, options)
            timings["arms_race"] = time.monotonic() - began - timings["rounds"]
    return measurements, arms_race


async def _keyword_round(keywords: KeywordProber | None, index: int) -> list[dict[str, Any]]:
    return [] if keywords is None else await keywords.run_round(index)


async def _arms_race(scenario: Scenario, services: LabServices,
                     options: LabOptions) -> list[BlockingResult]:
    """Every listed transport, at the end of the timeline, through the censor.

    Each fresh connection comes from its own client address (loopback
    addresses, or user addresses added inside the lab network), so a residual
    block after one hit does not decide the next attempts.
    """
    services.reseed(options.seed, -1)
    count = scenario.arms_race_connections
    network = services.sides.network
    sources = loopback_sources(count) if network is None else client_sources(network, count)
    results = []
    for transport in scenario.arms_race_transports:
        tunnel = await start_tunnel(services, transport, options.phase_timeout * 2)
        results.append(await tunnel.arms_race(count, options.phase_timeout * 2, sources))
    for name in scenario.arms_race_third_party:
        if network is None:
            log.warning("arms race: %s runs only in a lab network (--net): its client cannot "
                        "choose a source address per connection", name)
            continue
        results.append(await shadowsocks_race(services, count, options.phase_timeout * 2,
                                              sources))
    return results


async def run_lab(scenario: Scenario, options: LabOptions,
                  on_round: Callable[[Round], None] | None = None) -> LabResult:
    """Replay ``scenario`` and score the observatory; see the module documentation."""
    began = time.monotonic()
    if scenario.wechat is not None and options.net:
        raise ValueError(f"{scenario.name}: a scenario with a WeChat server runs on loopback "
                         "only (without --net)")
    schedule = Schedule(scenario.start, scenario.end, options.interval or scenario.interval)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="noisewall-lab-", dir=memory_folder()) as state:
        measurements, arms_race = await _replay(scenario, schedule, options, Path(state),
                                                on_round, timings=timings)
    analysed = time.monotonic()
    store_path = out / STORE
    remove_store(store_path)
    truth = sorted([*ground_truth(scenario), *wechat_truth(scenario)],
                   key=lambda e: (e.onset, e.vantage, e.feature))
    with MeasurementStore(store_path) as store:
        store.ingest_measurements(measurements, source=str(out / MEASUREMENTS))
        network_events = analyze(store)
        events: list[Event | FilteredEvent] = [*network_events, *stored_filtered_events(store)]
        timings["analysis"] = time.monotonic() - analysed
        result = LabResult(scenario, schedule, options.seed, truth, events,
                           score(truth, events, schedule), arms_race,
                           {"measurements": out / MEASUREMENTS, "store": store_path,
                            "decisions": out / DECISIONS, "analysis": out / ANALYSIS,
                            "report": out / REPORT},
                           time.monotonic() - began, timings,
                           "lab network" if options.net else "loopback")
        write_html_report(out / REPORT, store, events, ground_truth=_bands(truth),
                          extra_tables=_tables(result))
    (out / ANALYSIS).write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")
    return result


def memory_folder() -> str | None:
    """Where the run's throwaway state goes: a memory file system if there is one.

    The servers' blobs and databases and the probes' scratch files live for
    one run, yet each media transfer fsyncs and unlinks several of them; on a
    disk that costs more than the transfer (measured: 40 rounds of china-2017
    in 12.6 s from /tmp, 5.2 s from /dev/shm) and puts the disk in every
    throughput figure. None: the system's temporary folder.
    """
    shm = Path("/dev/shm")  # noqa: S108 - a private folder is made inside it
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _bands(truth: list[TruthEvent]) -> list[GroundTruthBand]:
    return [GroundTruthBand(f"truth: {e.kind}", e.onset, e.end,
                            vantage=e.vantage, feature=e.feature) for e in truth]


def _tables(result: LabResult) -> list[ReportTable]:
    verdict = "PASSED" if result.score.passed else "FAILED"
    tables = [ReportTable(f"Scoring: ground truth vs detected ({verdict}; onset and end "
                          f"tolerance {result.score.tolerance_rounds:g} rounds of "
                          f"{result.schedule.interval / 3600:g} h)",
                          SCORE_COLUMNS, result.score.rows())]
    if result.scenario.wechat is not None:
        tables.append(ReportTable(
            "Two messengers on one timeline: the E2E messenger (network censor) and the rival "
            "(server-side filtering, keyword probe)",
            ("messenger", "vantage", "feature", "kind", "onset (UTC)", "end (UTC)"),
            [("rival (WeChat mode)" if isinstance(e, FilteredEvent) else "E2E (WhatsApp-style)",
              e.vantage, e.feature, e.kind, iso(e.onset), iso(e.end) or "-")
             for e in sorted(result.events, key=lambda e: e.onset)]))
    if result.arms_race:
        tables.append(ReportTable(
            "Tunnel arms race at the end of the timeline (fresh connections through the censor)",
            ("transport", "connections", "blocked", "fraction", "failures"),
            [(r.transport, r.attempted, r.blocked, f"{r.fraction:.1%}",
              ", ".join(f"{k}: {v}" for k, v in sorted(r.failures.items())) or "-")
             for r in result.arms_race]))
    return tables
