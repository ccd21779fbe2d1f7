"""``noisewall client``: the messenger client's commands, one process per command."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from noisewall.cli_options import json_option, parse_endpoint, parsed_by
from noisewall.messenger.client import MessengerClient, Received
from noisewall.messenger.connection import ChatError
from noisewall.messenger.e2e import E2EError, IdentityChangedError, TrustError, fingerprint
from noisewall.messenger.e2e.safety import (
    format_safety_number,
    parse_safety_number,
    safety_number,
    same_safety_number,
)
from noisewall.messenger.mediaclient import MediaClientError
from noisewall.messenger.mediaclient_downloads import MediaDownload
from noisewall.messenger.mediacrypto import MediaError
from noisewall.noise.stream import FRAMINGS
from noisewall.records.endpoint import Endpoint

T = TypeVar("T")


@dataclass(frozen=True)
class _ClientOptions:
    profile: Path
    socks5: Endpoint | None


def _run(options: _ClientOptions, action: Callable[[MessengerClient], Awaitable[T]]) -> T:
    """Run one client action on the profile; server and E2E refusals become one line."""

    async def main() -> T:
        async with MessengerClient.open(options.profile, options.socks5) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except IdentityChangedError as exc:
        raise click.ClickException(
            f"{exc} (see `noisewall client --profile {options.profile} fingerprint {exc.peer}`"
            f", then `... accept-key {exc.peer}`)") from None
    except (ChatError, E2EError, MediaClientError, MediaError) as exc:
        raise click.ClickException(str(exc)) from None


def _sent(send: Callable[[MessengerClient], Awaitable[str]]
          ) -> Callable[[MessengerClient], Awaitable[str]]:
    """Wrap a send so the command says when the message only reached the outbox."""

    async def action(c: MessengerClient) -> str:
        msg_id = await send(c)
        return f"{msg_id} queued (server unreachable; sent on the next run)" if c.queued(
            msg_id) else msg_id

    return action


@click.group()
@click.option("--profile", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The profile folder (keys, sessions, history, media).")
@click.option("--socks5", metavar="HOST:PORT",
              help="Reach the server (chat and media) through this SOCKS5 proxy.")
@click.pass_context
def client(ctx: click.Context, profile: Path, socks5: str | None) -> None:
    """The messenger client: end-to-end encrypted text, media, locations, receipts.

    A peer's identity key is trusted when first seen; if it changes, nothing
    more is sent to that peer until you accept the new key (`fingerprint`,
    `verify`, `accept-key`).
    """
    ctx.obj = _ClientOptions(profile, parse_endpoint(socks5) if socks5 else None)


@client.command()
@click.argument("name")
@click.option("--server", required=True, metavar="HOST:PORT", help="The chat server.")
@click.option("--media", "media_url", metavar="URL",
              help="Reach the media server at this URL instead of the one it announces.")
@click.option("--framing", type=click.Choice(FRAMINGS), default="noisesocket",
              show_default=True, help="Chat wire framing (the server's --framing).")
@click.pass_obj
def register(options: _ClientOptions, name: str, server: str, media_url: str | None,
             framing: str) -> None:
    """Create the account NAME on the server and publish this profile's E2E keys."""
    parse_endpoint(server)
    if media_url is not None and not media_url.startswith("https://"):
        raise click.BadParameter("the media URL must start with https://", param_hint="--media")
    welcome = _run(options, lambda c: c.register(name, server, media_url=media_url,
                                                 framing=framing))
    media = welcome.media or {}
    click.echo(f"registered {welcome.name} on {server}"
               + (f" (media {media['url']})" if media else ""))


@client.command()
@click.argument("to")
@click.argument("text")
@click.pass_obj
def send(options: _ClientOptions, to: str, text: str) -> None:
    """Send TEXT to TO.

    Refused, with nothing encrypted, if the identity key of TO changed since
    it was first seen or accepted: see `fingerprint` and `accept-key`.
    """
    click.echo(_run(options, _sent(lambda c: c.send_text(to, text))))


def _media_command(kind: str) -> click.Command:
    @click.command(name=f"send-{kind}", help=f"Send a {kind} (encrypted, over HTTPS).")
    @click.argument("to")
    @click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
    @click.pass_obj
    def command(options: _ClientOptions, to: str, file: Path) -> None:
        click.echo(_run(options, _sent(lambda c: c.send_media(to, kind, file))))

    return command


for _kind in ("photo", "video", "voice"):
    client.add_command(_media_command(_kind))


@client.command(name="send-location")
@click.argument("to")
@click.argument("lat", type=click.FloatRange(-90, 90))
@click.argument("lon", type=click.FloatRange(-180, 180))
@click.option("--label", help="A name for the place.")
@click.pass_obj
def send_location(options: _ClientOptions, to: str, lat: float, lon: float,
                  label: str | None) -> None:
    """Send a location."""
    click.echo(_run(options, _sent(lambda c: c.send_location(to, lat, lon, label))))


def _describe(item: Received) -> str:
    entry = item.entry
    body = entry.body
    if entry.kind == "text":
        what = body.get("text", "")
    elif entry.kind == "location":
        what = f"{body.get('lat')}, {body.get('lon')} {body.get('label') or ''}".strip()
    elif item.media is not None:
        what = item.media.describe()
    else:
        what = str(item.media_path)
    earlier = " (earlier message)" if item.retried else ""
    return f"{entry.msg_id} {entry.peer} {entry.kind}{earlier}: {what}"


def _print_received(items: list[Received], as_json: bool) -> None:
    for peer in sorted({item.entry.peer for item in items if item.key_changed}):
        click.echo(f"warning: the identity key of {peer} changed (its safety number changed); "
                   f"messages to {peer} are held until you accept the new key: compare with "
                   f"`fingerprint {peer}`, then `accept-key {peer}`", err=True)
    if as_json:
        click.echo(json.dumps([item.as_json() for item in items], indent=2))
        return
    for item in items:
        click.echo(_describe(item))


@client.command()
@click.option("--wait", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds to wait for messages.")
@json_option
@click.pass_obj
def receive(options: _ClientOptions, wait: float, as_json: bool) -> None:
    """Receive, decrypt and store waiting messages (media into the profile's media folder).

    A media download that fails for a passing reason (the media server
    unreachable, HTTP 5xx...) waits as pending and is retried, with backoff,
    by later receives; earlier messages whose download was retried are listed
    too, marked "(earlier message)".
    """
    _print_received(_run(options, lambda c: c.receive(wait)), as_json)


@client.command()
@click.argument("message_ids", metavar="[MESSAGE_ID]...", nargs=-1)
@json_option
@click.pass_obj
def download(options: _ClientOptions, message_ids: tuple[str, ...], as_json: bool) -> None:
    """Retry media downloads now: every pending one, or the given messages'.

    A message given by id is tried even if its download failed after every
    attempt; a blob that failed its integrity check (tampered) or that the
    server refused is only reported.
    """
    _print_received(_run(options, lambda c: c.retry_downloads(message_ids)), as_json)


@client.command()
@click.argument("message_id")
@click.pass_obj
def read(options: _ClientOptions, message_id: str) -> None:
    """Mark a received message read (a voice note: played) and tell its sender."""

    async def action(c: MessengerClient) -> str:
        entry = c.profile.find(message_id)
        status = "played" if entry is not None and entry.kind == "voice" else "read"
        await c.mark(message_id, status)
        return status

    click.echo(_run(options, action))


@client.command()
@json_option
@click.pass_obj
def contacts(options: _ClientOptions, as_json: bool) -> None:
    """Everyone this profile has exchanged messages with."""

    async def action(c: MessengerClient) -> list[str]:
        return c.profile.contacts()

    names = _run(options, action)
    click.echo(json.dumps(names) if as_json else "\n".join(names))


@client.command()
@click.argument("peer", required=False)
@json_option
@click.pass_obj
def history(options: _ClientOptions, peer: str | None, as_json: bool) -> None:
    """The message history, oldest first (with one PEER only if given)."""

    async def action(c: MessengerClient) -> list[tuple[dict[str, Any], MediaDownload | None]]:
        downloads = c.media_downloads()
        return [(entry.as_json(), downloads.get((entry.peer, entry.msg_id)))
                for entry in c.profile.history(peer)]

    entries = _run(options, action)
    if as_json:
        click.echo(json.dumps([{**entry, "media": media.as_json()} if media else entry
                               for entry, media in entries], indent=2))
        return
    for entry, media in entries:
        arrow = "->" if entry["direction"] == "out" else "<-"
        body = entry["body"]
        shown = body.get("text") or body.get("name") or body.get("label") or entry["kind"]
        if media is not None:  # a received media message: where its file is, or why not yet
            shown = f"{shown} ({media.describe()})"
        click.echo(f"{entry['id']} {arrow} {entry['peer']} [{entry['status']}] "
                   f"{entry['kind']}: {shown}")


# --- identity keys: fingerprints, safety numbers, verification ------------


def _peer_keys(client: MessengerClient, peer: str) -> dict[str, Any]:
    """What is known of the identity key of ``peer``, as the ``fingerprint`` command shows it."""
    trusted = client.key_book.get(peer)
    if trusted is None:
        raise TrustError(f"no identity key of {peer!r} known yet: it is learned with the first "
                         "message sent to or received from them")
    me = (client.identity.account, client.identity.identity_key)
    view: dict[str, Any] = {
        "account": peer, "fingerprint": fingerprint(trusted.identity_key),
        "verified": trusted.verified,
        "safety_number": format_safety_number(safety_number(me, (peer, trusted.identity_key)))}
    if trusted.changed_key is not None:
        view["changed_key"] = {
            "fingerprint": fingerprint(trusted.changed_key),
            "safety_number": format_safety_number(
                safety_number(me, (peer, trusted.changed_key)))}
    return view


@client.command(name="fingerprint")
@click.argument("peer", required=False)
@json_option
@click.pass_obj
def fingerprint_command(options: _ClientOptions, peer: str | None, as_json: bool) -> None:
    """Show this profile's identity key fingerprint, and with PEER theirs and your safety number.

    The safety number (60 digits, as Signal's) is the same on both sides when
    each holds the other's real key: compare it with PEER in person or on a
    call, then mark the key verified with `verify PEER`. If the identity key
    of PEER changed (a new device, or someone in the middle), the new key is
    shown too and nothing is sent to PEER until you run `accept-key PEER`.
    """

    async def action(c: MessengerClient) -> dict[str, Any]:
        view: dict[str, Any] = {"account": c.identity.account,
                                "fingerprint": c.identity.fingerprint}
        if peer is not None:
            view["peer"] = _peer_keys(c, peer)
        return view

    view = _run(options, action)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(f"you ({view['account']}): {view['fingerprint']}")
    theirs = view.get("peer")
    if theirs is None:
        return
    state = "verified" if theirs["verified"] else "not verified"
    click.echo(f"{theirs['account']} ({state}): {theirs['fingerprint']}")
    click.echo(f"safety number: {theirs['safety_number']}")
    changed = theirs.get("changed_key")
    if changed is not None:
        click.echo(f"WARNING: the identity key of {peer} changed; nothing is sent to {peer} "
                   f"until you accept it (`accept-key {peer}`)")
        click.echo(f"{peer} (new key): {changed['fingerprint']}")
        click.echo(f"safety number with the new key: {changed['safety_number']}")


@client.command()
@click.argument("peer")
@click.option("--safety-number", "number", metavar="DIGITS",
              callback=parsed_by(parse_safety_number),
              help="The safety number PEER's device shows (spaces allowed): refused, and "
                   "nothing marked, unless it equals this profile's.")
@click.option("--clear", is_flag=True, help="Mark the key of PEER not verified.")
@click.pass_obj
def verify(options: _ClientOptions, peer: str, number: str | None, clear: bool) -> None:
    """Mark the identity key of PEER verified, after comparing safety numbers out of band."""

    async def action(c: MessengerClient) -> str:
        trusted = c.key_book.get(peer)
        if trusted is None:
            raise TrustError(f"no identity key of {peer!r} known yet")
        if number is not None:
            mine = safety_number((c.identity.account, c.identity.identity_key),
                                 (peer, trusted.identity_key))
            if not same_safety_number(mine, number):
                raise TrustError(f"the safety numbers differ: this is not the key {peer}'s "
                                 "device holds (nothing marked)")
        c.key_book.set_verified(peer, trusted.identity_key, not clear)
        return f"{peer} {'not verified' if clear else 'verified'}"

    click.echo(_run(options, action))


@client.command(name="accept-key")
@click.argument("peer")
@click.pass_obj
def accept_key(options: _ClientOptions, peer: str) -> None:
    """Accept the changed identity key of PEER, so messages to PEER go out again.

    Compare the new safety number first (`fingerprint PEER`): a changed key is
    a new device, or someone reading in the middle. The accepted key is not
    verified until you run `verify PEER`.
    """

    async def action(c: MessengerClient) -> str:
        c.key_book.accept(peer)
        return f"accepted the new identity key of {peer} (not verified)"

    click.echo(_run(options, action))
