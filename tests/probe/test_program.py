"""Program vantages: templates, real programs run and measured, failures named as OONI does."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.observatory.measurement import parse_measurement
from noisewall.probe.measurement import MeasurementMeta
from noisewall.probe.program import (
    OUTPUT_LIMIT,
    ProgramTemplateError,
    expand,
    placeholders,
    program_failure,
    program_measurement,
    run_program,
)
from tests.netns import require_program


@pytest.fixture
def needs_curl() -> None:
    require_program("curl", "curl")


def test_expand_fills_placeholders_as_data() -> None:
    argv = expand(["curl", "-sS", "https://{media_host}:{media_port}/", "--data", "{payload}"],
                  {"media_host": "mmg.whatsapp.net", "media_port": "8443",
                   "payload": "a b; rm -rf {x}"})
    assert argv == ["curl", "-sS", "https://mmg.whatsapp.net:8443/", "--data", "a b; rm -rf {x}"]


def test_double_braces_are_literal() -> None:
    template = ["awk", "{{print $1}}", "{file}"]
    assert placeholders(template) == {"file"}
    assert expand(template, {"file": "f"}) == ["awk", "{print $1}", "f"]


def test_unknown_placeholder_names_the_known_ones() -> None:
    known = r"\{chat_hots\} \(known: chat_host, chat_port\)"
    with pytest.raises(ProgramTemplateError, match=known):
        expand(["nc", "{chat_hots}"], {"chat_host": "h", "chat_port": "1"})


@pytest.mark.parametrize("template", [[], ["x{Bad-Name}"], ["{}"]])
def test_malformed_templates_are_refused(template: list[str]) -> None:
    with pytest.raises(ProgramTemplateError):
        expand(template, {})


@pytest.mark.parametrize(("argv0", "status", "stderr", "failure"), [
    ("curl", 0, b"", None),
    ("curl", 56, b"curl: (56) Recv failure: Connection reset by peer", "connection_reset"),
    ("/usr/bin/curl", 28, b"curl: (28) Operation timed out after 1001 ms", "generic_timeout_error"),
    ("curl", 35, b"curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL", "ssl_failed_handshake"),
    ("ssh", 255, b"kex_exchange_identification: Connection closed by remote host", "eof_error"),
    ("ssh", 255, b"ssh: connect to host h port 22: Connection refused", "connection_refused"),
    ("tool", 3, b"whatever", "unknown_failure: exit_status_3"),
    ("tool", -9, b"", "unknown_failure: killed_by_SIGKILL"),
])
def test_failure_strings(argv0: str, status: int, stderr: bytes, failure: str | None) -> None:
    assert program_failure(argv0, status, stderr, timed_out=False) == failure


async def test_exit_status_and_output_are_kept() -> None:
    outcome = await run_program(
        [sys.executable, "-c",
         "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"], timeout=30)
    assert (outcome.exit_status, outcome.timed_out) == (4, False)
    assert outcome.stdout == b"out\n" and outcome.stderr == b"err\n"
    assert outcome.failure == "unknown_failure: exit_status_4"


async def test_missing_program_is_a_failed_outcome() -> None:
    outcome = await run_program(["/nonexistent/noisewall-no-such-program"], timeout=5)
    assert outcome.exit_status is None
    assert outcome.failure == "unknown_failure: program_not_found"


async def test_hanging_program_and_its_children_are_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    outcome = await run_program(["sh", "-c", script], timeout=0.5)
    assert outcome.timed_out and outcome.failure == "generic_timeout_error"
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or _is_zombie(child):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"the program's child {child} outlived the measurement")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_output_is_bounded() -> None:
    outcome = await run_program(
        [sys.executable, "-c", "import sys; sys.stdout.write('x' * 5_000_000 + 'END')"], timeout=30)
    assert outcome.exit_status == 0
    assert len(outcome.stdout) == OUTPUT_LIMIT and outcome.stdout.endswith(b"END")


@pytest.fixture
async def resetting_server() -> AsyncIterator[int]:
    """A loopback server that answers every request with an RST, as a censor's reset does."""
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.usefixtures("needs_curl")
async def test_real_curl_meeting_a_reset(resetting_server: int) -> None:
    argv = expand(["curl", "-sS", "--max-time", "5", "http://{host}:{port}/"],
                  {"host": "127.0.0.1", "port": str(resetting_server)})
    outcome = await run_program(argv, timeout=10)
    assert outcome.exit_status == 56, outcome.stderr
    assert outcome.failure == "connection_reset"


@pytest.mark.usefixtures("needs_curl")
async def test_real_curl_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = await run_program(["curl", "-sS", f"http://127.0.0.1:{port}/"], timeout=10)
    assert (outcome.exit_status, outcome.failure) == (7, "connection_refused")


async def test_measurement_is_ingestible_ooni_format() -> None:
    outcome = await run_program(["sh", "-c", "echo 'read: Connection reset by peer' >&2; exit 1"],
                                timeout=5)
    meta = MeasurementMeta(report_id="20170701T000000Z_AS4134_x", test_start_time=1_498_867_200,
                           probe_asn="AS4134", probe_cc="CN", probe_ip="127.0.0.1",
                           probe_network_name="lab")
    measurement = program_measurement(meta, outcome, vantage="curl", feature="photo",
                                      round_no=3, start=1_500_000_000)
    assert measurement["test_keys"]["program"]["exit_status"] == 1
    parsed = parse_measurement(measurement)
    rows = {row.feature: row for row in parsed.rows}
    assert not rows["photo"].ok
    assert rows["photo"].failure == "connection_reset"
    assert parsed.vantage == "curl"
