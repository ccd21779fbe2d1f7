"""``noisewall bench tunnel``'s machinery on tiny transfers (a smoke test, not the targets)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from noisewall.bench import ssh as bench_ssh
from noisewall.bench import tunnel as bench
from noisewall.bench.proc_cpu import tree_cpu_seconds


def test_cpu_of_a_process_tree_counts_its_live_children() -> None:
    # The parent only sleeps (~0.05 CPU-s to start); its child burns 0.5 CPU-s, then sleeps.
    child = ("import time\nend = time.process_time() + 0.5\n"
             "while time.process_time() < end: pass\ntime.sleep(60)")
    parent = subprocess.Popen(
        [sys.executable, "-c",
         f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); "
         "time.sleep(60)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while tree_cpu_seconds(parent.pid) < 0.45 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(parent.pid) >= 0.45
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


@pytest.mark.slow
async def test_every_path_both_ways_with_cpu_per_process(tmp_path: Path) -> None:
    results = {r.name: r for r in await bench._run(tmp_path, 2 << 20, 1, 5)}
    paths = ["two plain TCP relays (no crypto, no mux)", "tls", "random", "noisesocket-padded"]
    yardstick = bench.DIRECT
    if bench_ssh.available():
        paths.append(bench_ssh.NAME)
        yardstick = bench_ssh.NAME
    for direction in bench.DIRECTIONS:
        for path in paths:
            row = results[f"tunnel {path}: {direction}"]
            assert row.unit == "MB/s" and row.value > 0 and row.baseline > 0
        assert results[f"tunnel tls: {direction}"].baseline_name == f"{yardstick}, median"
        helper = "sink" if direction == "upload" else "source"
        for role in ("tunnel client", "tunnel server", helper, "application"):
            row = results[f"tunnel tls: {direction}, {role}"]
            assert row.unit == "CPU-s/GB" and row.value >= 0
        if bench_ssh.available():  # the relay chain charged like ssh and sshd
            for role, like in (("entry relay", "ssh"), ("exit relay", "sshd")):
                row = results[f"tunnel {bench.RELAYS}: {direction}, {role}"]
                assert row.unit == "CPU-s/GB" and row.value >= 0 and row.baseline_name == like
    assert results["tunnel tls: 64 B round trip p50"].value > 0
