"""``noisewall lab``: replay a scenario and score the observatory against its ground truth."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from noisewall.cli_options import json_option
from noisewall.lab.groundtruth import iso
from noisewall.lab.runner import LabOptions, LabResult, run_lab
from noisewall.lab.scenario import parse_duration, resolve_scenario
from noisewall.lab.schedule import Round
from noisewall.lab.scoring import SCORE_COLUMNS

#: Exit status of a run that worked but whose detection failed the scoring.
EXIT_SCORING_FAILED = 3
DAY = 86400.0


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(parse_duration(text))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be positive")
    return seconds


def score_table(result: LabResult) -> Table:
    """Ground truth against detection, one row per true event, then the false alarms."""
    table = Table(title=f"{result.scenario.name}: ground truth vs detected "
                        f"(tolerance {result.score.tolerance_rounds:g} rounds of "
                        f"{result.schedule.interval / 3600:g} h)")
    for column in SCORE_COLUMNS:
        table.add_column(column)
    for row in result.score.rows():
        table.add_row(*row)
    return table


@click.command()
@click.argument("scenario", default="china-2017", metavar="[SCENARIO]")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("lab-out"),
              show_default=True, help="Folder for measurements, analysis and report.")
@click.option("--seed", default=2017, show_default=True, type=int,
              help="Seeds the censor's random decisions: same seed, same events.")
@click.option("--interval", metavar="DURATION", default=None,
              help="Probe every DURATION (12h, 1d, ...) instead of the scenario's interval.")
@click.option("--no-arms-race", is_flag=True, help="Skip the tunnel arms-race table.")
@click.option("--net", "net", is_flag=True,
              help="Run in a lab network of network namespaces made for this run (root): "
                   "servers outside, the censor in the path, probes inside, no proxy on the "
                   "censored path (docs/net.md). Default: everything on loopback.")
@json_option
def lab(scenario: str, out: Path, seed: int, interval: str | None, no_arms_race: bool,
        net: bool, as_json: bool) -> None:
    """Replay a censorship scenario (default: china-2017) and score what was detected.

    SCENARIO is a shipped scenario (china-2017, russia-2021, gfw-fet-2021) or a
    YAML file (docs/lab.md). Exit status 3 when detection fails the scoring.
    """
    loaded = resolve_scenario(scenario)
    options = LabOptions(out=out, seed=seed, interval=_duration(interval),
                         arms_race=not no_arms_race, net=net)
    console = Console(stderr=True)
    days = (loaded.end - loaded.start) / DAY
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.0f}/{task.total:.0f} simulated days"),
                  TimeElapsedColumn(), console=console, disable=as_json) as progress:
        task = progress.add_task(f"{loaded.name}", total=days)

        def on_round(round_: Round) -> None:
            progress.update(task, completed=min(days, (round_.time - loaded.start) / DAY + 1),
                            description=f"{loaded.name} {iso(round_.time)}")

        result = asyncio.run(run_lab(loaded, options, on_round))
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        stdout = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 150)
        stdout.print(score_table(result))
        if result.arms_race:
            race = Table(title="tunnel arms race at the end of the timeline")
            for column in ("transport", "connections", "blocked", "fraction"):
                race.add_column(column)
            for r in result.arms_race:
                race.add_row(r.transport, str(r.attempted), str(r.blocked), f"{r.fraction:.1%}")
            stdout.print(race)
        verdict = "PASSED" if result.score.passed else "FAILED"
        stdout.print(f"scoring {verdict} in {result.elapsed:.0f} s ({result.mode}); "
                     f"report: {result.files['report']}")
    if not result.score.passed:
        sys.exit(EXIT_SCORING_FAILED)
