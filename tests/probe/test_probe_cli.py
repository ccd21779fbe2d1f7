"""``noisewall probe`` as a user runs it: JSON lines out, one clear line on bad input."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.probe.conftest import Messenger


async def _noisewall(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "noisewall", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_probe_writes_a_measurement_per_round(tmp_path: Path,
                                                    messenger: Messenger) -> None:
    out = tmp_path / "m.jsonl"
    code, _, stderr = await _noisewall(
        "probe", "--server", "{}:{}".format(*messenger.server), "--media", messenger.media_url,
        "--features", "text,photo,tcp", "--count", "2", "--every", "0s",
        "--out", str(out), "--state", str(tmp_path / "state"), "--asn", "AS4134",
        "--cc", "CN")
    assert code == 0, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["annotations"]["round"] for m in lines] == ["0", "1"]
    assert all(m["test_keys"]["status"]["failed"] == [] for m in lines), lines
    assert all(m["probe_asn"] == "AS4134" and m["probe_cc"] == "CN" for m in lines)
    assert stderr.count("round ") == 2


@pytest.mark.parametrize(("args", "says"), [
    (["--server", "localhost", "--features", "text"], "HOST:PORT"),
    (["--server", "127.0.0.1:1", "--features", "text,sms"], "unknown feature"),
    (["--server", "127.0.0.1:1", "--every", "soon"], "duration"),
    (["--server", "127.0.0.1:1", "--asn", "4134"], "probe_asn"),
])
async def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    code, stdout, stderr = await _noisewall("probe", "--state", str(tmp_path), *args)
    assert code != 0 and stdout == ""
    assert says in stderr and "Traceback" not in stderr


async def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = await _noisewall("probe", "--server", "127.0.0.1:1", "--features",
                                       "text", "--state", str(tmp_path), "--timeout", "1s")
    assert code == 1
    assert stderr.startswith("noisewall: error:") and len(stderr.strip().splitlines()) == 1
