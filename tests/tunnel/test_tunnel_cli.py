"""``noisewall tunnel``: key, server and client as real processes; bad input as one line."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisewall import socks5
from noisewall.records.endpoint import Endpoint
from noisewall.tunnel.client import retry_delays
from noisewall.tunnel.server import TunnelServer
from tests.tunnel.conftest import Keys, server_config


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewall", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_key_is_created_once_and_printed(tmp_path: Path) -> None:
    first = _run("tunnel", "key", "--key", str(tmp_path / "k"))
    second = _run("tunnel", "key", "--key", str(tmp_path / "k"))
    assert first.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", first.stdout)
    assert second.stdout == first.stdout
    assert (tmp_path / "k").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(("args", "message"), [
    (["tunnel", "server", "--key", "K"], "no client may connect"),
    (["tunnel", "server", "--key", "K", "--allow-client", "zz"], "not valid hex"),
    (["tunnel", "server", "--key", "K", "--allow-client", "00" * 32, "--allow", "example.com:80"],
     "host names are not allowed"),
    (["tunnel", "client", "--key", "K", "--server", "127.0.0.1:1", "--server-key", "00" * 31],
     "must be 32 bytes"),
    (["tunnel", "client", "--key", "K", "--server", "nowhere", "--server-key", "00" * 32],
     "is not HOST:PORT"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / "k") if arg == "K" else arg for arg in args]
    result = _run(*args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


async def _start(args: list[str], pattern: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", *args, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
    match = re.search(pattern, line)
    if match is None:
        process.kill()
        await process.wait()
        pytest.fail(f"did not start: {line!r}")
    return process, int(match.group(1))


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@pytest.mark.slow
async def test_server_and_client_processes_carry_a_stream(tmp_path: Path,
                                                          echo_port: int) -> None:
    client_key = _run("tunnel", "key", "--key", str(tmp_path / "client")).stdout.strip()
    server_key = _run("tunnel", "key", "--key", str(tmp_path / "server")).stdout.strip()
    server, port = await _start(
        ["tunnel", "server", "--listen", "127.0.0.1:0", "--key", str(tmp_path / "server"),
         "--transport", "noisesocket-padded", "--allow-client", client_key,
         "--allow", f"127.0.0.1:{echo_port}"], r"on 127\.0\.0\.1:(\d+)")
    try:
        client, socks_port = await _start(
            ["tunnel", "client", "--server", f"127.0.0.1:{port}", "--server-key", server_key,
             "--key", str(tmp_path / "client"), "--transport", "noisesocket-padded",
             "--socks", "127.0.0.1:0"], r"SOCKS5 on 127\.0\.0\.1:(\d+)")
        try:
            reader, writer = await asyncio.wait_for(socks5.open_connection(
                Endpoint("127.0.0.1", socks_port), "127.0.0.1", echo_port), 10)
            writer.write(b"through two processes")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(-1), 10) == b"through two processes"
            writer.close()
        finally:
            await _stop(client)
    finally:
        await _stop(server)


def _refusing_port() -> socket.socket:
    """A loopback port that is ours but not listening: connections to it are refused."""
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    return reserved


async def _stderr_until(process: asyncio.subprocess.Process, pattern: str) -> list[str]:
    """The stderr lines up to and including the first that matches ``pattern``."""
    assert process.stderr is not None
    lines: list[str] = []
    while not (lines and re.search(pattern, lines[-1])):
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        if not line:
            pytest.fail(f"stderr ended before {pattern!r}: {lines}")
        lines.append(line)
    return lines


def _client_args(tmp_path: Path, port: int, server_key: str, wait: str) -> list[str]:
    return ["tunnel", "client", "--server", f"127.0.0.1:{port}", "--server-key", server_key,
            "--key", str(tmp_path / "client"), "--transport", "tls", "--socks", "127.0.0.1:0",
            "--wait", wait]


def test_retry_delays_double_up_to_a_bound() -> None:
    assert list(itertools.islice(retry_delays(0.5, 10.0), 7)) == [0.5, 1, 2, 4, 8, 10, 10]


@pytest.mark.slow
async def test_client_waits_for_a_server_that_comes_up_later(tmp_path: Path, keys: Keys,
                                                             echo_port: int) -> None:
    (tmp_path / "client").write_text(keys.client.private_bytes().hex())
    reserved = _refusing_port()
    port = reserved.getsockname()[1]
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall",
        *_client_args(tmp_path, port, keys.server.public.hex(), "60"),
        stderr=asyncio.subprocess.PIPE)
    try:
        waiting = await _stderr_until(client, r"retrying in")
        assert "ConnectionRefusedError" in waiting[-1] and "(attempt 2)" in waiting[-1]
        reserved.close()
        config = server_config(keys, "tls", [f"127.0.0.1:{echo_port}"], listen_port=port)
        async with TunnelServer(config) as server:
            lines = await _stderr_until(client, r"SOCKS5 on 127\.0\.0\.1:(\d+)")
            match = re.search(r"SOCKS5 on 127\.0\.0\.1:(\d+)", lines[-1])
            assert match is not None
            reader, writer = await asyncio.wait_for(socks5.open_connection(
                Endpoint("127.0.0.1", int(match.group(1))), "127.0.0.1", echo_port), 10)
            writer.write(b"after the wait")
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(-1), 10) == b"after the wait"
            writer.close()
            assert server.sessions == 1
    finally:
        reserved.close()
        await _stop(client)


@pytest.mark.slow
async def test_client_gives_up_with_one_clear_line(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "client").write_text(keys.client.private_bytes().hex())
    with _refusing_port() as reserved:
        port = reserved.getsockname()[1]
        start = time.monotonic()
        result = await asyncio.to_thread(
            _run, *_client_args(tmp_path, port, keys.server.public.hex(), "1.2"))
        elapsed = time.monotonic() - start
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # Pauses of 0.5 s, then the 0.7 s left: three attempts, two progress lines.
    assert [line.endswith(f"(attempt {n})") for n, line in enumerate(lines[:-1], 2)] == [True] * 2
    assert lines[-1].startswith("noisewall: error: gave up after 3 attempts in 1.2 s: tunnel to "
                                f"127.0.0.1:{port} failed: ConnectionRefusedError")
    assert elapsed < 20
