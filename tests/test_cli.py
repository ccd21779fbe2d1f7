"""The ``noisewall`` command as a user runs it: a real subprocess each time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from noisewall import __version__
from noisewall.noise.dh import dh_function
from tests.conftest import shared_file


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noisewall", *args],
        input=stdin.decode(), capture_output=True, text=True, timeout=120, check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_vectors_json_counts() -> None:
    result = run("noise", "vectors", str(shared_file("vectors/cacophony.txt")),
                 str(shared_file("vectors/noisesocket-subset.json")), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["passed"], report["failed"], report["skipped"]) == (992, 0, 0)
    assert report["failures"] == []


def test_vectors_exit_status_is_nonzero_on_failure(tmp_path: Path) -> None:
    vectors = json.loads(shared_file("vectors/cacophony.txt").read_text())["vectors"][:2]
    vectors[1]["handshake_hash"] = "00" * 64
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"vectors": vectors}))
    result = run("noise", "vectors", str(path))
    assert result.returncode == 1
    assert "1 passed, 1 failed, 0 skipped" in result.stdout
    assert "handshake hash" in result.stdout


@pytest.mark.parametrize("dh", ["25519", "448"])
def test_keygen_gives_a_matching_pair(dh: str) -> None:
    result = run("noise", "keygen", "--dh", dh, "--json")
    assert result.returncode == 0
    pair = json.loads(result.stdout)
    function = dh_function(dh)
    rebuilt = function.keypair_from_private(bytes.fromhex(pair["private"]))
    assert rebuilt.public.hex() == pair["public"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("noise", "vectors", "/nonexistent/file.json"), "cannot read"),
        (("noise", "keygen", "--dh", "1"), "Invalid value for '--dh'"),
        (("noise", "cat"), "exactly one of --listen and --connect"),
        (("noise", "cat", "--connect", "nohost"), "is not HOST:PORT"),
        (("noise", "cat", "--connect", "127.0.0.1:9", "--protocol", "Noise_ZZ_1_2_3"),
         "unknown handshake pattern"),
        (("noise", "cat", "--connect", "127.0.0.1:9", "--remote-key", "abc"), "not valid hex"),
        (("noise", "cat", "--connect", "127.0.0.1:9", "--static-key", "/nonexistent"),
         "cannot read key file"),
        (("noise", "frobnicate"), "No such command"),
        (("server", "--mode", "wechat", "--filters", "/nonexistent/lists.yaml"),
         "/nonexistent/lists.yaml: cannot read"),
        (("server", "--mode", "weibo"), "Invalid value for '--mode'"),
    ],
)
def test_bad_input_is_one_clear_line(args: tuple[str, ...], needle: str) -> None:
    result = run(*args)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr


def test_connect_to_a_closed_port_is_one_line() -> None:
    result = run("noise", "cat", "--connect", "127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1
    assert result.stderr.startswith("noisewall: error:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bench_quick_json_reports_ratios() -> None:
    result = run("bench", "noise", "--quick", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [line["name"] for line in report["results"]]
    assert any(name.startswith("XX handshakes") for name in names)
    assert any(name.startswith("IK handshakes") for name in names)
    for line in report["results"]:
        assert line["value"] > 0 and line["baseline"] > 0
        assert line["ratio"] == pytest.approx(line["value"] / line["baseline"], rel=1e-2)
