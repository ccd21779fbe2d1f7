"""``noisewall bench lab``: full runs of every shipped scenario, timed and scored.

For each scenario: how much faster than real time the replay ran (baseline:
real time), its wall time against the 3-minute budget, the ground-truth
events detected with the right kind and onset (baseline: all of them), the
false alarms (baseline: all detected events), and, for scenarios with an arms
race, each transport's blocked connections (baseline: connections attempted).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from noisewall.bench.kit import BenchResult
from noisewall.lab.runner import LabOptions, LabResult, run_lab
from noisewall.lab.scenario import parse_scenario, shipped_scenarios

__all__ = ["WALL_BUDGET_S", "run_lab_benchmarks"]

#: The lab's main command must finish a scenario within this on a 2-core machine.
WALL_BUDGET_S = 180.0


def _figures(result: LabResult) -> list[BenchResult]:
    name = result.scenario.name
    span = result.scenario.end - result.scenario.start
    score = result.score
    figures = [
        BenchResult(f"lab {name}: replay speed", "x real time", span / result.elapsed,
                    "real time", 1.0),
        BenchResult(f"lab {name}: wall time", "s", result.elapsed, "budget", WALL_BUDGET_S),
        BenchResult(f"lab {name}: events detected ok", "events",
                    float(sum(p.passed for p in score.pairs)), "ground truth",
                    float(len(score.pairs))),
        BenchResult(f"lab {name}: false alarms", "events", float(len(score.false_alarms)),
                    "detected events", float(len(result.events))),
    ]
    figures.extend(BenchResult(f"lab {name}: {race.transport} blocked", "connections",
                               float(race.blocked), "attempted", float(race.attempted))
                   for race in result.arms_race)
    return figures


def run_lab_benchmarks(quick: bool = False, seed: int = 2017) -> list[BenchResult]:
    """Every shipped scenario, full length (``quick``: 4x coarser rounds, no arms race)."""
    results: list[BenchResult] = []
    for name, text in sorted(shipped_scenarios().items()):
        scenario = parse_scenario(text, f"{name}.yaml")
        with tempfile.TemporaryDirectory(prefix="noisewall-bench-lab-") as tmp:
            options = LabOptions(out=Path(tmp), seed=seed,
                                 interval=scenario.interval * 4 if quick else None,
                                 arms_race=not quick)
            results.extend(_figures(asyncio.run(run_lab(scenario, options))))
    return results
