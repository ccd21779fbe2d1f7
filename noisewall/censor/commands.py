"""``noisewall censor``: the DPI middlebox, and offline classification of captures."""

from __future__ import annotations

import contextlib
import json
import random
import sys
from pathlib import Path
from typing import Any, TextIO

import click
import uvloop

from noisewall.allocator import tune_allocator
from noisewall.censor.flowclassifier import classify_flow
from noisewall.censor.middlebox import DEFAULT_SOCKS_ALLOW, MiddleboxConfig, Route
from noisewall.censor.pcap import read_flows
from noisewall.censor.policy import load_policy
from noisewall.censor.runner import CensorOptions, run_censor
from noisewall.censor.splicing import AVAILABLE as SPLICE_AVAILABLE
from noisewall.cli_options import json_option, parse_endpoint
from noisewall.net import Side, entered, load
from noisewall.records.endpoint import Endpoint
from noisewall.service import run_until_interrupted


def _endpoint(text: str) -> Endpoint:
    return parse_endpoint(text)


def _route(text: str) -> Route:
    listen, sep, target = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r} is not LISTEN=TARGET (HOST:PORT=HOST:PORT)")
    return Route(_endpoint(listen), _endpoint(target))


@click.group(invoke_without_command=True)
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False),
              help="Policy YAML (docs/censor-policy.md); reloaded on SIGHUP and on change.")
@click.option("--route", "routes", multiple=True, metavar="LISTEN=TARGET",
              help="Relay connections to LISTEN on to TARGET, e.g. 127.0.0.1:15222=127.0.0.1:5222.")
@click.option("--socks", metavar="HOST:PORT", help="Also act as a SOCKS5 gateway here.")
@click.option("--socks-allow", multiple=True, metavar="CIDR",
              help="Destinations the SOCKS5 gateway may reach "
                   f"(default: {', '.join(DEFAULT_SOCKS_ALLOW)}).")
@click.option("--net", "net_name", metavar="NAME",
              help="Sit in the path of lab network NAME (noisewall net up --name NAME): run "
                   "in its border namespace and take every TCP flow and DNS query the users "
                   "send out, with no proxy setting anywhere. Needs root.")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics here.")
@click.option("--log", "log_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Append decision JSON lines to this file (default: stdout).")
@click.option("--seed", type=int, help="Seed the censor's randomness (probability, flaky).")
@click.option("--max-flows", default=20000, show_default=True, type=click.IntRange(1),
              help="Flow table size; the least recently active flow is evicted beyond it.")
@click.option("--idle-timeout", default=300.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds after which an idle flow is closed.")
@click.option("--copy-relay", is_flag=True,
              help="Copy allowed flows through Python instead of handing them to the kernel "
                   "(splice); for comparison.")
@click.pass_context
def censor(
    ctx: click.Context,
    policy: Path | None,
    routes: tuple[str, ...],
    socks: str | None,
    socks_allow: tuple[str, ...],
    net_name: str | None,
    metrics: str | None,
    log_path: Path | None,
    seed: int | None,
    max_flows: int,
    idle_timeout: float,
    copy_relay: bool,
) -> None:
    """A GFW-style DPI middlebox: classify flows, then allow, reset, drop, throttle or flap them.

    Run it with --policy and at least one --route, --socks or --net; every
    decision is logged as one JSON line. `noisewall censor classify` works on
    captures.
    """
    if ctx.invoked_subcommand is not None:
        return
    if policy is None:
        raise click.UsageError("give --policy FILE (or a subcommand such as classify)")
    if not routes and socks is None and net_name is None:
        raise click.UsageError("give at least one --route, --socks or --net")
    network = load(net_name) if net_name is not None else None
    decision_log: TextIO = sys.stdout
    if log_path is not None:
        decision_log = log_path.open("a", encoding="utf-8")
    options = CensorOptions(
        policy=policy,
        routes=[_route(route) for route in routes],
        socks=_endpoint(socks) if socks else None,
        metrics=_endpoint(metrics) if metrics else None,
        decision_log=decision_log,
        seed=seed,
        network=network,
        config=MiddleboxConfig(
            max_flows=max_flows,
            idle_timeout=idle_timeout,
            socks_allow=socks_allow or DEFAULT_SOCKS_ALLOW,
            kernel_relay=SPLICE_AVAILABLE and not copy_relay,
        ),
    )
    tune_allocator()  # a bulk relay: keep glibc out of its page-faulting trim mode
    border = (entered(network.namespace(Side.BORDER)) if network is not None
              else contextlib.nullcontext())
    # uvloop: accepting, connecting and closing a flow cost the censor about
    # a fifth less CPU than on asyncio's own loop (docs/BENCHMARKS.md).
    with border:
        run_until_interrupted(run_censor(options), loop_factory=uvloop.new_event_loop)


@censor.command()
@click.argument("capture", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--policy", type=click.Path(path_type=Path, dir_okay=False),
              help="Also show the verdict this policy would give each flow.")
@json_option
def classify(capture: Path, policy: Path | None, as_json: bool) -> None:
    """Classify every TCP flow in a pcap or pcapng CAPTURE."""
    rules = load_policy(policy) if policy else None
    rng = random.Random(0)  # noqa: S311 - the same capture gives the same verdicts
    rows: list[dict[str, Any]] = []
    for flow in read_flows(capture):
        record = classify_flow(
            flow.client, flow.server, flow.client_data, flow.first_client_segment,
            flow.server_data,
        )
        row = record.as_json()
        row["packets"] = flow.packets
        if rules is not None:
            row["verdict"] = rules.decide(record, flow.first_seen, rng).as_json()
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        label = row["protocol"]
        extra = [f"sni={row['sni']}"] if row["sni"] else []
        if row["host"]:
            extra.append(f"host={row['host']}")
        if row["popcount"] is not None:
            flag = "fully-encrypted" if row["fully_encrypted"] else f"exempt:{row['exemption']}"
            extra.append(f"{flag} popcount={row['popcount']}")
        if "verdict" in row:
            verdict = row["verdict"]
            extra.append(f"-> {verdict['action']['kind']} ({verdict['rule'] or 'default'})")
        click.echo(f"{row['client']} -> {row['server']} {label} {' '.join(extra)}")
    click.echo(f"{len(rows)} flows")
