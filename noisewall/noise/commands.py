"""``noisewall noise ...``: test vectors, keys, and netcat over NoiseSocket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from noisewall.cli_options import json_option, parse_endpoint
from noisewall.noise.cat import CatOptions, run_cat
from noisewall.noise.dh import DH_FUNCTIONS, dh_function
from noisewall.noise.keys import load_private_key, parse_hex_key
from noisewall.noise.protocol import parse_protocol_name
from noisewall.noise.settings import NoiseSettings
from noisewall.noise.stream import FRAMINGS, Framing
from noisewall.noise.vectors import VectorFormatError, VectorReport, run_vector_file
from noisewall.service import run_until_interrupted

DEFAULT_PROTOCOL = "Noise_XX_25519_AESGCM_SHA256"


@click.group()
def noise() -> None:
    """The Noise protocol core: test vectors, keys, and netcat over NoiseSocket."""


@noise.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
def vectors(files: tuple[Path, ...], as_json: bool) -> None:
    """Run Noise test-vector FILES (cacophony/snow JSON or NoiseSocket vectors).

    Exits 0 only when no vector failed; skipped vectors are listed with why.
    """
    report = VectorReport()
    for path in files:
        try:
            report.merge(run_vector_file(path))
        except VectorFormatError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for failure in report.failures:
            click.echo(f"FAIL {failure.file}#{failure.index} {failure.protocol_name}: "
                       f"{failure.reason}")
        for skip in report.skips:
            click.echo(f"SKIP {skip.file}#{skip.index} {skip.protocol_name}: {skip.reason}")
        click.echo(f"{report.passed} passed, {report.failed} failed, {report.skipped} skipped")
    if report.failed:
        sys.exit(1)


@noise.command()
@click.option("--dh", "dh_name", type=click.Choice(list(DH_FUNCTIONS)), default="25519",
              show_default=True, help="The DH function.")
@json_option
def keygen(dh_name: str, as_json: bool) -> None:
    """Print a new static key pair as hex (private key first: keep it secret)."""
    pair = dh_function(dh_name).generate_keypair()
    private, public = pair.private_bytes().hex(), pair.public.hex()
    if as_json:
        click.echo(json.dumps({"dh": dh_name, "private": private, "public": public}))
    else:
        click.echo(f"private {private}\npublic  {public}")


def _listener_needs_static(responding: list[str], switching_to: str | None) -> bool:
    """Whether any protocol the listener may run needs its static key."""
    if switching_to and parse_protocol_name(switching_to).pattern.uses_static(True):
        return True  # after a switch the listener is the new protocol's initiator
    return any(parse_protocol_name(name).pattern.uses_static(False) for name in responding)


@noise.command(name="cat")
@click.option("--listen", "listen_at", metavar="HOST:PORT", help="Accept connections here.")
@click.option("--connect", "connect_to", metavar="HOST:PORT", help="Connect to a listener.")
@click.option("--protocol", default=DEFAULT_PROTOCOL, show_default=True,
              help="The initial Noise protocol name.")
@click.option("--accept", multiple=True, metavar="NAME",
              help="Another protocol to accept (listener: as initial; connector: in a switch).")
@click.option("--fallback", metavar="NAME",
              help="Listener: switch to this protocol when the first message cannot be read "
                   "(Noise Pipes: Noise_XXfallback_25519_AESGCM_SHA256). Connector: accept it.")
@click.option("--retry-with", "retry_with", metavar="NAME",
              help="Listener: ask a connector whose initial protocol is not accepted to retry "
                   "with this one (instead of rejecting it).")
@click.option("--static-key", type=click.Path(path_type=Path),
              help="File holding our hex static private key.")
@click.option("--remote-key", metavar="HEX",
              help="The peer's static public key: used where the pattern needs it in advance, "
                   "and otherwise required to match the key the peer proves.")
@click.option("--psk", "psks", multiple=True, metavar="HEX", help="A 32-byte PSK (repeatable).")
@click.option("--prologue", default="", help="Application prologue text (both ends must agree).")
@click.option("--pad", default=0, type=click.IntRange(0, 65517),
              help="Pad every encrypted NoiseSocket body to a multiple of N bytes.")
@click.option("--framing", type=click.Choice(FRAMINGS), default="noisesocket",
              show_default=True, help="Wire framing.")
@click.option("--echo", is_flag=True,
              help="Listener: send every message back, serving many connections at once.")
@click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
              help="Seconds allowed for connecting and for each handshake.")
def cat_command(
    listen_at: str | None,
    connect_to: str | None,
    protocol: str,
    accept: tuple[str, ...],
    fallback: str | None,
    retry_with: str | None,
    static_key: Path | None,
    remote_key: str | None,
    psks: tuple[str, ...],
    prologue: str,
    pad: int,
    framing: Framing,
    echo: bool,
    timeout: float,
) -> None:
    """Netcat over NoiseSocket: stdin to the peer, the peer's messages to stdout.

    Exactly one of --listen and --connect. Each chunk of stdin goes out as
    one NoiseSocket message, exactly as the 2draft spec frames it, so any
    spec peer reads it. A listener that needs a static key and has none gets
    a fresh one and prints its public key on stderr; it prints one line on
    stderr for every connection it closes, saying why (handshake failure,
    decrypt failure, malformed body, the peer's close), and keeps serving.
    """
    if (listen_at is None) == (connect_to is None):
        raise click.UsageError("give exactly one of --listen and --connect")
    if echo and listen_at is None:
        raise click.UsageError("--echo only applies with --listen")
    if retry_with and listen_at is None:
        raise click.UsageError("--retry-with only applies with --listen")
    listening = listen_at is not None
    host, port = parse_endpoint(listen_at or connect_to or "")
    parsed = parse_protocol_name(protocol)
    dh = parsed.dh
    static = load_private_key(static_key, dh) if static_key else None
    if static is None and listening and _listener_needs_static(
        [protocol, *accept, *([retry_with] if retry_with else [])], fallback
    ):
        static = dh.generate_keypair()
        click.echo(f"static public key: {static.public.hex()}", err=True)
    remote = parse_hex_key(remote_key, dh.publen, "--remote-key") if remote_key else None
    remote_pre = parsed.pattern.initiator_pre if listening else parsed.pattern.responder_pre
    settings = NoiseSettings(
        protocol=protocol,
        static=static,
        remote_static=remote,
        psks=[parse_hex_key(psk, 32, "--psk") for psk in psks],
        prologue=prologue.encode("utf-8"),
        padding=pad,
        accept=[*accept, *([fallback] if fallback and not listening else [])],
        fallbacks={protocol: fallback} if fallback and listening else {},
        retry_with=retry_with,
    )
    options = CatOptions(
        host, port, listening, settings, framing, echo,
        expected_remote=remote if "s" not in remote_pre else None, timeout=timeout,
    )
    run_until_interrupted(run_cat(options))
