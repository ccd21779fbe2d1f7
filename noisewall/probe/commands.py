"""``noisewall probe``: measure each messenger feature the way the app uses it."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import TextIO

import click
from pydantic import ValidationError

from noisewall.cli_options import parse_endpoint
from noisewall.errors import InputError
from noisewall.messenger.client import ChatError
from noisewall.messenger.e2e import E2EError
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, Vantage
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import FEATURES, Feature
from noisewall.service import run_until_interrupted

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1.5h``, ``1d``, ``250ms`` into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m, 1h")
    return float(match.group(1)) * _UNIT[match.group(2) or "s"]


def parse_features(text: str) -> tuple[Feature, ...]:
    """A comma-separated feature list."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FEATURES]
    if unknown or not names:
        raise click.BadParameter(f"unknown feature(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {','.join(FEATURES)}")
    return tuple(name for name in FEATURES if name in names)


def _endpoint(value: str | None) -> Endpoint | None:
    return None if value is None else parse_endpoint(value)


async def _run(prober: Prober, count: int, every: float, out: TextIO) -> None:
    async with prober:
        for round_no in range(count):
            started = asyncio.get_running_loop().time()
            for measurement in await prober.run_round(round_no):
                out.write(json.dumps(measurement) + "\n")
                out.flush()
                status = measurement["test_keys"]["status"]
                failed = ", ".join(
                    f"{name}={measurement['test_keys']['features'][name]['failure']}"
                    for name in status["failed"])
                click.echo(f"round {round_no} {measurement['annotations']['vantage']}: "
                           f"ok {','.join(status['ok']) or '-'}"
                           + (f"; failed {failed}" if failed else ""), err=True)
            if round_no + 1 < count:
                elapsed = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, every - elapsed))


@click.command()
@click.option("--server", required=True, metavar="HOST:PORT", help="The chat server.")
@click.option("--media", "media_url", metavar="URL",
              help="Media server URL (default: the one the server announces).")
@click.option("--socks5", metavar="HOST:PORT",
              help="Measure through this SOCKS5 proxy (e.g. a censor's gateway).")
@click.option("--control-socks5", metavar="HOST:PORT",
              help="Also measure over this uncensored path each round (vantage 'control'); "
                   "accounts are then set up over it too.")
@click.option("--features", default=",".join(FEATURES), show_default=True,
              help="Comma-separated features to measure.")
@click.option("--every", default="60s", show_default=True, help="Time between rounds.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1),
              help="Number of rounds.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Append measurements (JSON lines) here; default stdout.")
@click.option("--state", type=click.Path(path_type=Path, file_okay=False),
              default=Path("noisewall-probe"), show_default=True,
              help="Folder for the probe's accounts and samples.")
@click.option("--timeout", default="2s", show_default=True,
              help="Per-phase timeout (connect, handshake, request).")
@click.option("--asn", default="AS0", show_default=True, help="probe_asn to record.")
@click.option("--cc", default="ZZ", show_default=True, help="probe_cc to record.")
@click.option("--network", help="probe_network_name to record.")
def probe(server: str, media_url: str | None, socks5: str | None, control_socks5: str | None,
          features: str, every: str, count: int, out: Path | None, state: Path, timeout: str,
          asn: str, cc: str, network: str | None) -> None:
    """Probe the messenger's features and write OONI-format measurements (JSON lines)."""
    control = _endpoint(control_socks5)
    vantages = [Vantage(label="direct", socks5=_endpoint(socks5))]
    if control is not None:
        vantages.append(Vantage(label="control", socks5=control))
    phase_timeout = parse_duration(timeout)
    try:
        settings = ProbeSettings(
            server=parse_endpoint(server), media_url=media_url,
            features=parse_features(features), vantages=tuple(vantages), setup_socks5=control,
            connect_timeout=phase_timeout, phase_timeout=phase_timeout,
            probe_asn=asn, probe_cc=cc, probe_network_name=network)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InputError(f"{where}: {first['msg']}") from None
    interval = parse_duration(every)
    prober = Prober(settings, state)
    try:
        if out is None:
            run_until_interrupted(_run(prober, count, interval, sys.stdout))
        else:
            with out.open("a", encoding="utf-8") as sink:
                run_until_interrupted(_run(prober, count, interval, sink))
    except (ChatError, E2EError) as exc:  # the server refused the probe's accounts
        raise click.ClickException(str(exc)) from None
