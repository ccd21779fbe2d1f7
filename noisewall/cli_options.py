"""Options and argument types shared by every ``noisewall`` subcommand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from noisewall.records.endpoint import Endpoint

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    """The ``--json`` flag every result-printing command has."""
    return click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")(func)


def parse_endpoint(text: str) -> Endpoint:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) into host and port."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    return Endpoint(host.strip("[]"), int(port))


def parsed_by(parse: Callable[[str], str]
              ) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """A click callback that parses an optional value, a ValueError becoming a bad parameter."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback
