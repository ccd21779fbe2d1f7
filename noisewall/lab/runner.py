"""Run a scenario end to end: services, probes on the simulated clock, analysis, scoring.

:func:`run_lab` starts the messenger server, the censor (with the scenario's
timeline as its policy), a tunnel per tunnel vantage and the probes, all in
this process on loopback; replays the scenario one probe round at a time on
the simulated clock; then stores the measurements in ClickHouse (chDB), runs the
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

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisewall.clock import ManualClock
from noisewall.lab.groundtruth import TruthEvent, ground_truth, iso
from noisewall.lab.scenario import Scenario
from noisewall.lab.schedule import Round, Schedule
from noisewall.lab.scoring import SCORE_COLUMNS, Score, score
from noisewall.lab.services import LabServices
from noisewall.lab.tunnels import LabTunnel, start_tunnel
from noisewall.observatory.detect import Event, analyze
from noisewall.observatory.report_html import GroundTruthBand, ReportTable, write_html_report
from noisewall.observatory.store import MeasurementStore, remove_store
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes
from noisewall.probe.settings import Vantage as ProbeVantage
from noisewall.tunnel.armsrace import BlockingResult

__all__ = ["LabOptions", "LabResult", "run_lab"]

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
    samples: SampleSizes = field(default_factory=lambda: SampleSizes(
        text=4096, photo=12 * 1024, video=16 * 1024, voice=8 * 1024))


@dataclass
class LabResult:
    """What a run produced."""

    scenario: Scenario
    schedule: Schedule
    seed: int
    truth: list[TruthEvent]
    events: list[Event]
    score: Score
    arms_race: list[BlockingResult]
    files: dict[str, Path]
    elapsed: float
    timings: dict[str, float] = field(default_factory=dict)

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
    assert services.addresses is not None
    vantages = []
    for vantage in scenario.vantages:
        if vantage.path == "censor":
            socks = services.addresses.socks
            vantages.append(ProbeVantage(label=vantage.name, socks5=socks))
        elif vantage.path == "direct":
            vantages.append(ProbeVantage(label=vantage.name))
        else:
            socks = tunnels[vantage.name].socks
            vantages.append(ProbeVantage(label=vantage.name, socks5=socks))
    return ProbeSettings(
        server=services.addresses.chat,
        features=scenario.features,
        vantages=tuple(vantages),
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
    clock = ManualClock(scenario.start)
    measurements: list[dict[str, Any]] = []
    arms_race: list[BlockingResult] = []
    out = options.out
    began = time.monotonic()
    with (out / DECISIONS).open("w", encoding="utf-8") as decisions, \
            (out / MEASUREMENTS).open("w", encoding="utf-8") as lines:
        async with LabServices(state, scenario.policy, clock, decision_log=decisions,
                               media_name=scenario.media_name) as services:
            tunnels: dict[str, LabTunnel] = {}
            for vantage in scenario.vantages:
                if vantage.transport is not None:
                    tunnels[vantage.name] = await start_tunnel(
                        services, vantage.transport, options.phase_timeout)
            settings = _probe_settings(scenario, services, tunnels, options)
            async with Prober(settings, state / "probe", clock) as prober:
                for round_ in schedule.run(clock):
                    services.reseed(options.seed, round_.index)
                    for name, tunnel in tunnels.items():
                        await tunnel.reconnect(scenario.vantage(name).background)
                    for measurement in await prober.run_round(round_.index):
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


async def _arms_race(scenario: Scenario, services: LabServices,
                     options: LabOptions) -> list[BlockingResult]:
    """Every listed transport, at the end of the timeline, through the censor."""
    services.reseed(options.seed, -1)
    results = []
    for transport in scenario.arms_race_transports:
        tunnel = await start_tunnel(services, transport, options.phase_timeout * 2)
        results.append(await tunnel.arms_race(scenario.arms_race_connections,
                                              options.phase_timeout * 2))
    return results


async def run_lab(scenario: Scenario, options: LabOptions,
                  on_round: Callable[[Round], None] | None = None) -> LabResult:
    """Replay ``scenario`` and score the observatory; see the module documentation."""
    began = time.monotonic()
    schedule = Schedule(scenario.start, scenario.end, options.interval or scenario.interval)
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="noisewall-lab-") as state:
        measurements, arms_race = await _replay(scenario, schedule, options, Path(state),
                                                on_round, timings=timings)
    analysed = time.monotonic()
    store_path = out / STORE
    remove_store(store_path)
    truth = ground_truth(scenario)
    with MeasurementStore(store_path) as store:
        store.ingest_measurements(measurements, source=str(out / MEASUREMENTS))
        events = analyze(store)
        timings["analysis"] = time.monotonic() - analysed
        result = LabResult(scenario, schedule, options.seed, truth, events,
                           score(truth, events, schedule), arms_race,
                           {"measurements": out / MEASUREMENTS, "store": store_path,
                            "decisions": out / DECISIONS, "analysis": out / ANALYSIS,
                            "report": out / REPORT},
                           time.monotonic() - began, timings)
        write_html_report(out / REPORT, store, events, ground_truth=_bands(truth),
                          extra_tables=_tables(result))
    (out / ANALYSIS).write_text(json.dumps(result.as_json(), indent=2) + "\n", encoding="utf-8")
    return result


def _bands(truth: list[TruthEvent]) -> list[GroundTruthBand]:
    return [GroundTruthBand(f"truth: {e.kind}", e.onset, e.end,
                            vantage=e.vantage, feature=e.feature) for e in truth]


def _tables(result: LabResult) -> list[ReportTable]:
    verdict = "PASSED" if result.score.passed else "FAILED"
    tables = [ReportTable(f"Scoring: ground truth vs detected ({verdict}; onset and end "
                          f"tolerance {result.score.tolerance_rounds:g} rounds of "
                          f"{result.schedule.interval / 3600:g} h)",
                          SCORE_COLUMNS, result.score.rows())]
    if result.arms_race:
        tables.append(ReportTable(
            "Tunnel arms race at the end of the timeline (fresh connections through the censor)",
            ("transport", "connections", "blocked", "fraction", "failures"),
            [(r.transport, r.attempted, r.blocked, f"{r.fraction:.1%}",
              ", ".join(f"{k}: {v}" for k, v in sorted(r.failures.items())) or "-")
             for r in result.arms_race]))
    return tables
