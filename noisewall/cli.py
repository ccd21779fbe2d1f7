"""The one ``noisewall`` command; each subcommand group delegates to its package."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from noisewall import __version__
from noisewall.cli_options import json_option
from noisewall.errors import InputError, NetError
from noisewall.noise.errors import NoiseError
from noisewall.service import INTERRUPTED

if TYPE_CHECKING:
    from noisewall.bench.kit import BenchResult

#: Each subcommand group as "module:attribute", imported only when it runs: a
#: ``noisewall noise cat`` need not load aiohttp, the censor and the lab first
#: (importing every package takes ~1 s of CPU, paid by every process the
#: tests and the lab start).
SUBCOMMANDS = {
    "noise": "noisewall.noise.commands:noise",
    "censor": "noisewall.censor.commands:censor",
    "server": "noisewall.messenger.server_commands:server",
    "client": "noisewall.messenger.client_commands:client",
    "tunnel": "noisewall.tunnel.commands:tunnel",
    "probe": "noisewall.probe.commands:probe",
    "observe": "noisewall.observatory.commands:observe",
    "lab": "noisewall.lab.commands:lab",
    "net": "noisewall.net.commands:net",
}


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class _LazyGroup(click.Group):
    """A group whose :data:`SUBCOMMANDS` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS and cmd_name not in self.commands:
            self.add_command(_load(SUBCOMMANDS[cmd_name]), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="noisewall")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
def cli(verbose: int) -> None:
    """noisewall: encrypted messaging under a censoring firewall, on one machine."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")



@cli.group()
def bench() -> None:
    """Benchmarks: each figure is reported next to a baseline measured in the same run."""


def _print_results(results: list[BenchResult], as_json: bool) -> None:
    machine_description = _load("noisewall.bench.kit:machine_description")
    if as_json:
        click.echo(json.dumps({"machine": machine_description(),
                               "results": [r.as_json() for r in results]}, indent=2))
        return
    click.echo(f"machine: {machine_description()}")
    for r in results:
        click.echo(f"{r.name:42} {r.value:12.1f} {r.unit:13} baseline ({r.baseline_name}) "
                   f"{r.baseline:12.1f}  ratio {r.ratio:.2f}")


def _bench_command(name: str, run: str, summary: str) -> None:
    """``bench NAME``, running the function ``run`` ("module:function") when invoked."""
    @click.option("--quick", is_flag=True,
                  help="A short smoke run (figures are not meaningful).")
    @json_option
    def command(quick: bool, as_json: bool) -> None:
        _print_results(_load(run)(quick=quick), as_json)

    command.__doc__ = summary
    bench.command(name=name)(command)


_bench_command("noise", "noisewall.bench.noise:run_noise_benchmarks",
               "Noise handshakes per second and transport throughput vs the raw AEAD.")
_bench_command("censor", "noisewall.bench.censor:run_censor_benchmarks",
               "Relay throughput vs direct loopback, new flows/s, capture packets/s.")
_bench_command("tunnel", "noisewall.bench.tunnel:run_tunnel_benchmarks",
               "Bulk throughput of each tunnel transport vs OpenSSH's ssh -D, both ways, with "
               "CPU seconds per GB of each process.")
_bench_command("wechat", "noisewall.bench.messenger:run_filtering_benchmark",
               "WeChat mode's filtering cost: relay messages/s with 10,000 keyword combinations "
               "loaded, against the E2E relay in the same run.")
_bench_command("lab", "noisewall.bench.lab:run_lab_benchmarks",
               "Full runs of every shipped scenario: replay speed, wall time, detection score.")


@bench.command(name="observe")
@click.option("--ingest", "ingested", type=click.IntRange(1_000), metavar="N",
              help="Measurements in the ingested file (default 200,000; with --quick 20,000). "
                   "A larger N shows the sustained rate, with the engine's background merges.")
@click.option("--measurements", type=click.IntRange(1_000), metavar="N",
              help="Measurements in the analysed store (default: as many as the ingest).")
@click.option("--quick", is_flag=True, help="A short smoke run (figures are not meaningful).")
@json_option
def bench_observe(ingested: int | None, measurements: int | None, quick: bool,
                  as_json: bool) -> None:
    """`observe ingest` of a file of synthetic measurements vs the engine's own raw and
    typed inserts of it and the SQLite store; `observe analyze` vs the engine's raw scan."""
    run = _load("noisewall.bench.observatory:run_observe_benchmarks")
    _print_results(run(quick, measurements, ingested), as_json)


@bench.command(name="messenger")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1, 256),
              metavar="N", help="Sender/recipient pairs (N senders and N recipients).")
@click.option("--quick", is_flag=True, help="A short smoke run (figures are not meaningful).")
@json_option
def bench_messenger(clients: int, quick: bool, as_json: bool) -> None:
    """Relayed and E2E messages/s through a durable server, latency, idle-connection memory."""
    run = _load("noisewall.bench.messenger:run_messenger_benchmarks")
    _print_results(run(clients, quick), as_json)


def main() -> None:
    """Entry point: one clear line on stderr for any expected failure, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (NoiseError, InputError, NetError, ValueError, OSError, TimeoutError) as exc:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            message = "timed out"
        click.echo(f"noisewall: error: {message}", err=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("NOISEWALL_DEBUG"):
            raise
        click.echo(f"noisewall: internal error: {type(exc).__name__}: {exc} "
                   "(set NOISEWALL_DEBUG=1 for a traceback)", err=True)
        sys.exit(70)
