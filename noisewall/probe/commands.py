"""``noisewall probe``: measure each messenger feature the way the app uses it.

``keyword`` is a feature of its own: it needs a WeChat-mode server and a
candidates file (:mod:`noisewall.probe.keyword_file`), and writes
``noisewall_keyword_filtering`` measurements, one per round and region,
beside (or instead of) the messaging ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click
from pydantic import ValidationError

from noisewall.cli_options import parse_endpoint
from noisewall.errors import InputError
from noisewall.messenger.connection import ChatError
from noisewall.messenger.e2e import E2EError
from noisewall.messenger.wechat.directory import REGIONS, Region
from noisewall.noise import NoiseError
from noisewall.probe.keyword import KeywordProber, KeywordSettings
from noisewall.probe.keyword_file import load_keyword_candidates
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, Vantage
from noisewall.records.endpoint import Endpoint
from noisewall.records.names import FEATURES, Feature
from noisewall.service import run_until_interrupted

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: The feature that tests a WeChat-mode server's keyword lists (not a messaging feature).
KEYWORD = "keyword"
CHOICES = (*FEATURES, KEYWORD)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1.5h``, ``1d``, ``250ms`` into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 5m, 1h")
    return float(match.group(1)) * _UNIT[match.group(2) or "s"]


def parse_features(text: str) -> tuple[tuple[Feature, ...], bool]:
    """A comma-separated feature list: the messaging features, and whether ``keyword`` is in it."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CHOICES]
    if unknown or not names:
        raise click.BadParameter(f"unknown feature(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {','.join(CHOICES)}")
    return tuple(name for name in FEATURES if name in names), KEYWORD in names


def parse_regions(text: str) -> tuple[Region, ...]:
    """A comma-separated list of account regions."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGIONS]
    if unknown or not names:
        raise click.BadParameter(f"unknown region(s) {', '.join(unknown) or '(none)'}; "
                                 f"choose from {','.join(REGIONS)}")
    return tuple(region for region in REGIONS if region in names)


def _endpoint(value: str | None) -> Endpoint | None:
    return None if value is None else parse_endpoint(value)


def _messaging_line(measurement: dict[str, Any]) -> str:
    status = measurement["test_keys"]["status"]
    failed = ", ".join(f"{name}={measurement['test_keys']['features'][name]['failure']}"
                       for name in status["failed"])
    return f"ok {','.join(status['ok']) or '-'}" + (f"; failed {failed}" if failed else "")


def _keyword_line(measurement: dict[str, Any]) -> str:
    keys = measurement["test_keys"]
    if keys["failure"] is not None:
        return f"keyword failed {keys['failure']}"
    lost = [f"{section}:{name}" for section in ("combinations", "images")
            for name, outcome in keys[section].items() if outcome["arrived"] is False]
    controls = [scope for scope, arrived in keys["control"].items() if not arrived]
    return (f"keyword: {len(lost)} not delivered{': ' + ', '.join(lost) if lost else ''}"
            + (f"; control lost in {','.join(controls)} (round says nothing there)"
               if controls else ""))


Summary = Callable[[dict[str, Any]], str]


async def _run(probers: list[tuple[Prober | KeywordProber, Summary]], count: int, every: float,
               out: TextIO) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for prober, _ in probers:
            await stack.enter_async_context(prober)
        for round_no in range(count):
            started = asyncio.get_running_loop().time()
            for prober, summary in probers:
                for measurement in await prober.run_round(round_no):
                    out.write(json.dumps(measurement) + "\n")
                    out.flush()
                    click.echo(f"round {round_no} {measurement['annotations']['vantage']}: "
                               f"{summary(measurement)}", err=True)
            if round_no + 1 < count:
                elapsed = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, every - elapsed))


@click.command(epilog="""\b
The keyword feature (a WeChat-mode server, docs/wechat.md):
  noisewall probe --server HOST:PORT --features keyword --keywords kw.yaml
Each round, from a mainland and an international account (--regions), one to
one and in a group, the probe sends a control message with no sensitive terms
and each candidate of kw.yaml (text combinations and images); one measurement
per round and region (noisewall_keyword_filtering) says which arrived.
A candidate that did not arrive while its control did was filtered by the
server; `noisewall observe analyze` reports it as a `filtered` event.""")
@click.option("--server", required=True, metavar="HOST:PORT", help="The chat server.")
@click.option("--media", "media_url", metavar="URL",
              help="Media server URL (default: the one the server announces).")
@click.option("--socks5", metavar="HOST:PORT",
              help="Measure through this SOCKS5 proxy (e.g. a censor's gateway).")
@click.option("--control-socks5", metavar="HOST:PORT",
              help="Also measure over this uncensored path each round (vantage 'control'); "
                   "accounts are then set up over it too.")
@click.option("--features", default=",".join(FEATURES), show_default=True,
              help=f"Comma-separated features to measure: {','.join(CHOICES)}.")
@click.option("--keywords", "keywords_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Candidates for the keyword feature (YAML: candidates, images, control).")
@click.option("--regions", default=",".join(REGIONS), show_default=True,
              help="Account regions the keyword feature sends from.")
@click.option("--wait", default="1s", show_default=True,
              help="How long the keyword feature's receivers listen each round.")
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
          features: str, keywords_path: Path | None, regions: str, wait: str, every: str,
          count: int, out: Path | None, state: Path, timeout: str, asn: str, cc: str,
          network: str | None) -> None:
    """Probe the messenger's features and write OONI-format measurements (JSON lines)."""
    messaging, keyword = parse_features(features)
    if keyword and keywords_path is None:
        raise click.BadParameter("the keyword feature needs --keywords FILE",
                                 param_hint="--keywords")
    if keywords_path is not None and not keyword:
        raise click.BadParameter("--keywords is for the keyword feature (add it to --features)",
                                 param_hint="--keywords")
    phase_timeout = parse_duration(timeout)
    probers: list[tuple[Prober | KeywordProber, Summary]] = []
    try:
        if messaging:
            control = _endpoint(control_socks5)
            vantages = [Vantage(label="direct", socks5=_endpoint(socks5))]
            if control is not None:
                vantages.append(Vantage(label="control", socks5=control))
            settings = ProbeSettings(
                server=parse_endpoint(server), media_url=media_url, features=messaging,
                vantages=tuple(vantages), setup_socks5=control,
                connect_timeout=phase_timeout, phase_timeout=phase_timeout,
                probe_asn=asn, probe_cc=cc, probe_network_name=network)
            probers.append((Prober(settings, state), _messaging_line))
        if keywords_path is not None:
            tests = load_keyword_candidates(keywords_path)
            keyword_settings = KeywordSettings(
                server=parse_endpoint(server), candidates=tests.candidates, images=tests.images,
                **({} if tests.control is None else {"control": tests.control}),
                regions=parse_regions(regions), wait=parse_duration(wait),
                timeout=phase_timeout, socks5=_endpoint(socks5),
                probe_asn=asn, probe_cc=cc, probe_network_name=network)
            probers.append((KeywordProber(keyword_settings, state / "keyword"), _keyword_line))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise InputError(f"{where}: {first['msg']}") from None
    interval = parse_duration(every)
    try:
        if out is None:
            run_until_interrupted(_run(probers, count, interval, sys.stdout))
        else:
            with out.open("a", encoding="utf-8") as sink:
                run_until_interrupted(_run(probers, count, interval, sink))
    except (ChatError, E2EError, NoiseError) as exc:  # the server refused the probe's accounts
        raise click.ClickException(str(exc)) from None
