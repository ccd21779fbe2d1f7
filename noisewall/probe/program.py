"""Real programs as vantages: run an unmodified command and measure its outcome.

OONI's ``urlgetter`` turns one fetch into a measurement; this does the same for
any program a user brings (``curl``, ``ssh``, a circumvention tool's client):
the command runs as it is, its exit status, timing and output become a
feature result, and the observatory detects and scores it like any probe.

The command is a template (a list of arguments, never a shell string) whose
``{name}`` placeholders the lab fills with its own names and ports. The
failure string is read the way a person reads a failed run: a timeout is a
timeout; otherwise the error the program printed (``Connection reset by
peer`` is ECONNRESET's text, whatever program printed it) or, for programs
whose exit statuses are documented (curl), the status; anything else is
``unknown_failure: exit_status_N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from noisewall.probe.failures import ERRNO_FAILURES
from noisewall.probe.measurement import MeasurementMeta, Trace, build_measurement
from noisewall.records.measurement import FeatureResult

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")

#: How much of each output stream a measurement keeps (the end of it: errors come last).
OUTPUT_LIMIT = 4096
_PIPE_GRACE = 1.0

# curl's documented exit statuses (man curl, EXIT CODES) that name a network failure.
_CURL_EXIT = {
    6: "dns_nxdomain_error",
    7: "connection_refused",
    28: "generic_timeout_error",
    35: "ssl_failed_handshake",
    52: "eof_error",
    56: "connection_reset",
    60: "ssl_unknown_authority",
}
_EXIT_TABLES = {"curl": _CURL_EXIT}

# What programs print for an errno is strerror's text; first match wins. Then phrases
# that programs print for an end of connection without an errno (OpenSSH: "Connection closed
# by HOST port N", "kex_exchange_identification: Connection closed by remote host").
_PRINTED = (*((os.strerror(number), failure) for number, failure in ERRNO_FAILURES.items()),
            ("Connection closed by", "eof_error"))


class ProgramTemplateError(ValueError):
    """A command template that cannot be filled (unknown or malformed placeholder)."""


def placeholders(template: Sequence[str]) -> set[str]:
    """The placeholder names a command template uses (``{{`` and ``}}`` are literal braces)."""
    names: set[str] = set()
    for argument in template:
        for match in _PLACEHOLDER.finditer(_unescaped(argument)):
            name = match.group(1)
            if not _NAME.fullmatch(name):
                raise ProgramTemplateError(f"{argument!r}: bad placeholder {{{name}}}")
            names.add(name)
    return names


def expand(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """The command line: each ``{name}`` replaced by ``values[name]``.

    Raises ProgramTemplateError naming the placeholder and the known names when
    one is unknown. Values are substituted as data, never parsed again.
    """
    if not template:
        raise ProgramTemplateError("empty command")
    unknown = sorted(placeholders(template) - values.keys())
    if unknown:
        known = ", ".join(sorted(values)) or "none"
        raise ProgramTemplateError(f"unknown placeholder {{{unknown[0]}}} (known: {known})")
    return [_fill(argument, values) for argument in template]


def _unescaped(argument: str) -> str:
    return argument.replace("{{", "").replace("}}", "")


def _fill(argument: str, values: Mapping[str, str]) -> str:
    parts = re.split(r"(\{\{|\}\}|\{[^{}]*\})", argument)
    out: list[str] = []
    for part in parts:
        if part == "{{":
            out.append("{")
        elif part == "}}":
            out.append("}")
        elif part.startswith("{") and part.endswith("}"):
            out.append(values[part[1:-1]])
        else:
            out.append(part)
    return "".join(out)


@dataclass(frozen=True)
class ProgramOutcome:
    """One run of a program: how it ended and the tail of what it printed."""

    argv: tuple[str, ...]
    exit_status: int | None
    """The exit status; negative for a signal (as subprocess reports it); None if it never ran."""
    timed_out: bool
    runtime: float
    stdout: bytes
    stderr: bytes
    failure: str | None

    def as_json(self) -> dict[str, object]:
        """The measurement's ``test_keys.program`` object."""
        return {
            "argv": list(self.argv), "exit_status": self.exit_status,
            "timed_out": self.timed_out, "runtime": round(self.runtime, 6),
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
            "output_truncated_to": OUTPUT_LIMIT,
        }


def program_failure(argv0: str, exit_status: int | None, stderr: bytes, *,
                    timed_out: bool) -> str | None:
    """The OONI failure string for a program's end, or None for success (exit status 0)."""
    if timed_out:
        return "generic_timeout_error"
    if exit_status == 0:
        return None
    if exit_status is None:
        return "unknown_failure: program_not_started"
    if exit_status < 0:
        return f"unknown_failure: killed_by_{signal.Signals(-exit_status).name}"
    text = stderr.decode("utf-8", "replace")
    for printed, failure in _PRINTED:
        if printed in text:
            return failure
    table = _EXIT_TABLES.get(PurePath(argv0).name, {})
    return table.get(exit_status, f"unknown_failure: exit_status_{exit_status}")


async def run_program(argv: Sequence[str], *, timeout: float,
                      prefix: Sequence[str] = ()) -> ProgramOutcome:
    """Run ``prefix + argv`` with no stdin, kill its process group at ``timeout`` seconds.

    ``prefix`` places the program (e.g. ``ip netns exec NS``) without being
    part of what is measured. A program that cannot be started is a failed
    outcome, not an exception.
    """
    command = (*prefix, *argv)
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        reason = "program_not_found" if isinstance(exc, FileNotFoundError) else \
            "program_not_executable"
        return ProgramOutcome(tuple(argv), None, False, time.monotonic() - started, b"",
                              str(exc).encode(), f"unknown_failure: {reason}")
    stdout, stderr = _Tail(), _Tail()
    assert process.stdout is not None and process.stderr is not None
    readers = asyncio.gather(stdout.drain(process.stdout), stderr.drain(process.stderr))
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout)
    except TimeoutError:
        timed_out = True
    finally:
        # Also on cancellation: the program and its children never outlive the measurement.
        _kill_group(process.pid)
        await process.wait()
        # A descendant that left the process group may still hold the pipes open.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(readers, _PIPE_GRACE)
    status = process.returncode
    return ProgramOutcome(
        tuple(argv), status, timed_out, time.monotonic() - started, stdout.data, stderr.data,
        program_failure(argv[0], status, stderr.data, timed_out=timed_out))


class _Tail:
    """The last OUTPUT_LIMIT bytes of a stream read to its end (bounded memory)."""

    def __init__(self) -> None:
        self.data = b""

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.data = (self.data + chunk)[-OUTPUT_LIMIT:]


def _kill_group(pid: int) -> None:
    # The program may have started children of its own (ssh's ProxyCommand, a tunnel's helper).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def program_measurement(meta: MeasurementMeta, outcome: ProgramOutcome, *, vantage: str,
                        feature: str, round_no: int, start: float) -> dict[str, Any]:
    """One OONI-format measurement of a program vantage: ``feature`` is what its run stands for.

    The feature's ``t_round_trip`` and ``runtime`` are the program's wall time;
    ``test_keys.program`` keeps the command, exit status and output tails.
    """
    result = FeatureResult(t_round_trip=outcome.runtime, runtime=outcome.runtime)
    if outcome.failure is not None:
        result.fail(outcome.failure, None)
    measurement = build_measurement(meta, vantage=vantage, round_no=round_no, start=start,
                                    runtime=outcome.runtime, results={feature: result},
                                    trace=Trace())
    measurement["test_keys"]["program"] = outcome.as_json()
    return measurement
