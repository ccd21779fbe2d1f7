"""The one ``noisewall`` command; each subcommand group delegates to its package."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable

import click

from noisewall import __version__
from noisewall.censor.bench import run_censor_benchmarks
from noisewall.censor.commands import censor
from noisewall.cli_options import json_option
from noisewall.errors import InputError
from noisewall.lab.bench import run_lab_benchmarks
from noisewall.lab.commands import lab
from noisewall.messenger.bench import run_messenger_benchmarks
from noisewall.messenger.commands import client, server
from noisewall.net.commands import net
from noisewall.net.errors import NetError
from noisewall.noise.bench import BenchResult, machine_description, run_noise_benchmarks
from noisewall.noise.commands import noise
from noisewall.noise.errors import NoiseError
from noisewall.observatory.bench import run_observe_benchmarks
from noisewall.observatory.commands import observe
from noisewall.probe.commands import probe
from noisewall.tunnel.bench import run_tunnel_benchmarks
from noisewall.tunnel.commands import tunnel


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="noisewall")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug) to stderr.")
def cli(verbose: int) -> None:
    """noisewall: encrypted messaging under a censoring firewall, on one machine."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


cli.add_command(noise)
cli.add_command(censor)
cli.add_command(server)
cli.add_command(client)
cli.add_command(tunnel)
cli.add_command(probe)
cli.add_command(observe)
cli.add_command(lab)
cli.add_command(net)


@cli.group()
def bench() -> None:
    """Benchmarks: each figure is reported next to a baseline measured in the same run."""


def _print_results(results: list[BenchResult], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"machine": machine_description(),
                               "results": [r.as_json() for r in results]}, indent=2))
        return
    click.echo(f"machine: {machine_description()}")
    for r in results:
        click.echo(f"{r.name:42} {r.value:12.1f} {r.unit:13} baseline ({r.baseline_name}) "
                   f"{r.baseline:12.1f}  ratio {r.ratio:.2f}")


def _bench_command(name: str, run: Callable[..., list[BenchResult]], summary: str) -> None:
    @click.option("--quick", is_flag=True,
                  help="A short smoke run (figures are not meaningful).")
    @json_option
    def command(quick: bool, as_json: bool) -> None:
        _print_results(run(quick=quick), as_json)

    command.__doc__ = summary
    bench.command(name=name)(command)


_bench_command("noise", run_noise_benchmarks,
               "Noise handshakes per second and transport throughput vs the raw AEAD.")
_bench_command("censor", run_censor_benchmarks,
               "Relay throughput vs direct loopback, new flows/s, capture packets/s.")
_bench_command("tunnel", run_tunnel_benchmarks,
               "Throughput and round trip of each tunnel transport vs direct loopback.")
_bench_command("observe", run_observe_benchmarks,
               "Ingest rate and analysis time of 200,000 synthetic measurements vs the "
               "engine's raw insert and scan, and vs the SQLite store.")
_bench_command("lab", run_lab_benchmarks,
               "Full runs of every shipped scenario: replay speed, wall time, detection score.")


@bench.command(name="messenger")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1, 256),
              metavar="N", help="Sender/recipient pairs (N senders and N recipients).")
@click.option("--quick", is_flag=True, help="A short smoke run (figures are not meaningful).")
@json_option
def bench_messenger(clients: int, quick: bool, as_json: bool) -> None:
    """Relayed and E2E messages/s through a durable server, latency, idle-connection memory."""
    _print_results(run_messenger_benchmarks(clients, quick), as_json)


def main() -> None:
    """Entry point: one clear line on stderr for any expected failure, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
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
