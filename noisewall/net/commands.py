"""``noisewall net``: the lab network of namespaces that real programs run in."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from noisewall.cli_options import json_option
from noisewall.errors import NetError
from noisewall.net import lifecycle
from noisewall.net.hosts import add_host, check_address
from noisewall.net.lifecycle import HostAddress
from noisewall.net.run import ProgramNotFound, exec_in
from noisewall.net.status import network_status
from noisewall.net.topology import DEFAULT_NAME, Network, Side, check_name
from noisewall.net.trust import issue_server_certificate, write_certificate
from noisewall.selfsigned import dns_name


def _name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else check_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _host(text: str) -> tuple[str, HostAddress]:
    name, sep, address = text.partition("=")
    try:
        return dns_name(name), (check_address(Network.named(), address) if sep else None)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: {exc}") from None


def _hosts(_ctx: click.Context, _param: click.Parameter,
           value: tuple[str, ...]) -> dict[str, HostAddress]:
    return dict(_host(text) for text in value)


_NAME_HELP = "The network's name: 1-8 of [a-z0-9-]."
_HOST_HELP = ("A lab name for the DNS resolver, NAME=ADDR with ADDR in 203.0.113.0/24, or just "
              "NAME for the next free server address (203.0.113.10-19). Repeatable.")


@click.group()
def net() -> None:
    """The lab network: inside (users) - border (censor) - outside (servers), in namespaces.

    Needs root. Addresses exist only inside the namespaces: the users are
    198.51.100.2, the servers 203.0.113.10-19, the lab's DNS resolver 203.0.113.53.
    See docs/net.md.
    """


@net.command()
@click.option("--name", default=DEFAULT_NAME, show_default=True, callback=_name, help=_NAME_HELP)
@click.option("--host", "hosts", multiple=True, metavar="NAME[=ADDR]", callback=_hosts,
              help=_HOST_HELP)
@json_option
def up(name: str, hosts: dict[str, HostAddress], as_json: bool) -> None:
    """Create a network and leave it up.

    A network that exists, even in part, is an error: take it down first.
    """
    lifecycle.up(name, hosts)
    _print_status(name, as_json)


@net.command()
@click.argument("hosts", nargs=-1, required=True, metavar="NAME[=ADDR]...", callback=_hosts)
@click.option("--name", default=DEFAULT_NAME, show_default=True, callback=_name, help=_NAME_HELP)
def host(hosts: dict[str, HostAddress], name: str) -> None:
    """Declare lab names in a running network's DNS.

    NAME alone gets the next free server address; prints each name and address.
    """
    network = lifecycle.load(name)
    for host_name, address in hosts.items():
        click.echo(f"{host_name} {add_host(network, host_name, address)}")


@net.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--side", type=click.Choice([s.value for s in Side]), default=Side.INSIDE.value,
              show_default=True, help="The namespace to run in.")
@click.option("--name", default=DEFAULT_NAME, show_default=True, callback=_name, help=_NAME_HELP)
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def run(side: str, name: str, program: tuple[str, ...]) -> None:
    """Run PROGRAM unmodified in one of the network's namespaces.

    Example: noisewall net run -- curl https://NAME/. It uses the lab's
    resolver and trusts the lab's CA; its exit status is this command's (127
    if it does not exist).
    """
    network = lifecycle.load(name)
    try:
        exec_in(network, Side(side), program)
    except ProgramNotFound as exc:
        click.echo(f"noisewall: error: {exc}", err=True)
        sys.exit(127)


@net.command()
@click.option("--name", callback=_name, help="Only this network (default: every one).")
@json_option
def status(name: str | None, as_json: bool) -> None:
    """Show the networks that exist, wholly or in part.

    With --name, exit 1 if that network does not exist.
    """
    names = [name] if name else lifecycle.list_networks()
    if name and name not in lifecycle.list_networks():
        raise NetError(f"network {name!r} does not exist")
    if as_json:
        click.echo(json.dumps({"networks": [network_status(n).as_json() for n in names]},
                              indent=2))
    elif not names:
        click.echo("no noisewall network is up")
    for network_name in [] if as_json else names:
        _print_status(network_name, as_json=False)


@net.command()
@click.option("--name", callback=_name, help=f"The network to remove (default: {DEFAULT_NAME}).")
@click.option("--all", "everything", is_flag=True,
              help="Remove every noisewall network and whatever killed runs left behind.")
def down(name: str | None, everything: bool) -> None:
    """Remove a network: its processes, namespaces, interfaces, files. Idempotent."""
    if name and everything:
        raise click.UsageError("give --name or --all, not both")
    if everything:
        removed = lifecycle.down_all()
        click.echo(f"removed: {', '.join(removed)}" if removed else "nothing to remove")
        return
    lifecycle.down(name or DEFAULT_NAME)


@net.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--name", default=DEFAULT_NAME, show_default=True, callback=_name, help=_NAME_HELP)
@click.option("--out", "folder", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for cert.pem and key.pem.")
def cert(names: tuple[str, ...], name: str, folder: Path) -> None:
    """Issue a server certificate from the lab's CA.

    NAMES are host names or IP addresses; the first is the common name.
    """
    network = Network.named(name)
    cert_path, key_path = write_certificate(issue_server_certificate(network, names), folder)
    click.echo(f"{cert_path}\n{key_path}\nCA: {network.ca_file}")


def _print_status(name: str, as_json: bool) -> None:
    report = network_status(name).as_json()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    namespaces = ", ".join(f"{side} {info['name']}{'' if info['exists'] else ' (missing)'}"
                           for side, info in report["namespaces"].items())
    resolver = report["resolver"]
    click.echo(f"network {report['name']}: {report['state']}\n"
               f"  namespaces: {namespaces}\n"
               f"  client: {report['client']}  border interfaces: "
               f"{report['border_interfaces']['inside']} (inside), "
               f"{report['border_interfaces']['outside']} (outside)\n"
               f"  resolver: {resolver['address']} "
               f"({'pid ' + str(resolver['pid']) if resolver['pid'] else 'not running'})")
    for host_name, address in sorted(report["hosts"].items()):
        click.echo(f"  {host_name:30} {address}")
