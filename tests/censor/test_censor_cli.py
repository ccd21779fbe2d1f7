"""``noisewall censor`` and ``noisewall censor classify`` as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.bench.censor import write_benchmark_capture
from noisewall.bench.kit import rss
from tests.censor.capture import HTTP_REQUEST, http_echo_works


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewall", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_classify_capture_with_policy(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    write_benchmark_capture(capture, 30)
    policy = tmp_path / "p.yaml"
    policy.write_text("rules:\n"
                      "  - {name: no-noise, match: {protocol: noisesocket}, action: reset}\n"
                      "  - {name: slow-web, match: {sni: example.org}, "
                      "action: {kind: throttle, rate_kbps: 128}}\n")
    result = run("censor", "classify", str(capture), "--policy", str(policy), "--json")
    assert result.returncode == 0, result.stderr
    flows = json.loads(result.stdout)
    assert len(flows) == 30
    by_protocol = {f["protocol"]: f for f in flows}
    assert set(by_protocol) == {"tls", "http", "noisesocket"}
    assert by_protocol["tls"]["sni"] == "example.org"
    assert by_protocol["tls"]["ja4"].startswith("t13d")
    assert by_protocol["tls"]["verdict"]["effect"] == "throttle"
    assert by_protocol["noisesocket"]["verdict"]["rule"] == "no-noise"
    assert by_protocol["http"]["host"] == "media.example"
    assert by_protocol["http"]["verdict"]["effect"] == "allow"
    assert all(f["packets"] == 9 for f in flows)
    text = run("censor", "classify", str(capture))
    assert text.returncode == 0
    assert "30 flows" in text.stdout and "sni=example.org" in text.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("censor", "classify", "/nonexistent.pcap"), "nonexistent.pcap"),
        (("censor", "--route", "127.0.0.1:0=127.0.0.1:1"), "give --policy"),
        (("censor", "--policy", "{policy}"), "at least one --route, --socks or --net"),
        (("censor", "--policy", "{policy}", "--route", "nonsense"), "LISTEN=TARGET"),
        (("censor", "--policy", "{bad}", "--route", "127.0.0.1:0=127.0.0.1:1"),
         "bad.yaml:2: rules[0].action"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    policy = tmp_path / "ok.yaml"
    policy.write_text("rules: []\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - action: explode\n")
    result = run(*(a.format(policy=policy, bad=bad) for a in args))
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _round_trip(port: int) -> bool:
    return await http_echo_works("127.0.0.1", port)


async def test_middlebox_process_logs_metrics_and_reloads(tmp_path: Path, echo_port: int) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("rules: [{name: open, action: allow}]\n")
    log = tmp_path / "decisions.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", "censor", "--policy", str(policy),
        "--route", f"127.0.0.1:0=127.0.0.1:{echo_port}", "--metrics", "127.0.0.1:0",
        "--log", str(log), stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
        port = int(re.search(r"route 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        metrics_line = (await asyncio.wait_for(process.stderr.readline(), 5)).decode()
        metrics_port = int(re.search(r"metrics on 127\.0\.0\.1:(\d+)", metrics_line).group(1))  # type: ignore[union-attr]
        assert await _round_trip(port)
        # A live flow opened before the reload keeps its decision.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HTTP_REQUEST)
        await asyncio.wait_for(reader.readexactly(len(HTTP_REQUEST)), 5)

        policy.write_text("rules: [{name: closed, match: {protocol: http}, action: reset}]\n")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while await _round_trip(port):
            assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
            await asyncio.sleep(0.2)
        writer.write(b"still here")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"still here"
        writer.close()

        # A change to the file alone reloads it too (polled every second).
        policy.write_text("rules: [{name: open-again, action: allow}]\n")
        os.utime(policy, (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 10
        while not await _round_trip(port):
            assert time.monotonic() < deadline, "file change did not reload the policy"
            await asyncio.sleep(0.2)
        # An invalid policy is refused and the last good one stays.
        policy.write_text("rules: [{action: {kind: throttle, rate_kbps: -1}}]\n")
        os.utime(policy, (time.time() + 10, time.time() + 10))
        await asyncio.sleep(2.5)
        assert await _round_trip(port)

        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
        ).read().decode()
        assert 'noisewall_censor_flows_total{action="allow",protocol="http",rule="open"}' in metrics
        assert 'action="reset",protocol="http",rule="closed"' in metrics
    finally:
        process.terminate()
        await process.wait()
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert {e["rule"] for e in entries} >= {"open", "closed", "open-again"}
    assert all(set(e) >= {"time", "client", "server", "protocol", "effect"} for e in entries)


async def _start_censor(policy: Path, target_port: int, log: Path
                        ) -> tuple[asyncio.subprocess.Process, int]:
    """A ``noisewall censor`` process with one route to ``target_port``, and the route's port."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", "censor", "--policy", str(policy),
        "--route", f"127.0.0.1:0=127.0.0.1:{target_port}", "--log", str(log),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
    return process, int(re.search(r"route 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]


@pytest.mark.slow
async def test_a_thousand_throttled_flows_pushing_hard_cost_the_censor_kilobytes_each(
    tmp_path: Path,
) -> None:
    # Issue 18: a throttled flow reads only what its bucket will release; what
    # its client pushes beyond that waits in the kernel's socket buffers.
    flows, rate_kbps, pushing = 1000, 64, 4.0
    received = 0

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        while data := await reader.read(65536):
            received += len(data)
        writer.close()

    policy = tmp_path / "throttle.yaml"
    policy.write_text(f"rules: [{{match: {{protocol: ssh}}, "
                      f"action: {{kind: throttle, rate_kbps: {rate_kbps}}}}}]\n")
    log = tmp_path / "decisions.jsonl"
    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    async with server:
        censor, port = await _start_censor(policy, server.sockets[0].getsockname()[1], log)
        try:
            await asyncio.sleep(1)  # settled after start
            before = rss(censor.pid)
            pusher = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.censor.flood_client", "127.0.0.1", str(port),
                str(flows), "120", "push", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert pusher.stdin is not None and pusher.stdout is not None
                line = await asyncio.wait_for(pusher.stdout.readline(), 120)
                assert line == f"open {flows}\n".encode(), line
                for _ in range(600):  # a loaded machine may take a while to classify them all
                    if log.exists() and log.read_text().count("\n") >= flows:
                        break
                    await asyncio.sleep(0.1)
                pusher.stdin.write(b"push\n")
                await pusher.stdin.drain()
                start, peak = time.monotonic(), 0
                while time.monotonic() - start < pushing:
                    peak = max(peak, rss(censor.pid))
                    await asyncio.sleep(0.2)
                moved_at, moved = time.monotonic() - start, received
            finally:
                pusher.kill()
                await pusher.wait()
        finally:
            censor.terminate()
            await censor.wait()
    grown = peak - before
    print(f"rss {before / 2**20:.0f} -> {peak / 2**20:.0f} MiB, received {moved}")
    decisions = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(d["protocol"], d["effect"]) for d in decisions] == [("ssh", "throttle")] * flows
    assert grown <= 100 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
    # Every flow moved, none faster than its bucket (8,000 bytes/s after a burst).
    assert flows * 1500 < moved < flows * (rate_kbps * 125 * moved_at + 20_000)
