"""Hostile lines (issue 19): each drops only itself, with a one-line reason; many are summarised."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from noisewall.observatory.sqlite_store import SqliteStore
from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import SyntheticNetwork, synthetic_measurements


def _measurements(rounds: int) -> list[dict[str, object]]:
    network = SyntheticNetwork("Net", "AS64500", features=("text", "photo"))
    return list(synthetic_measurements(network, rounds=rounds, start=1_505_865_600,
                                       interval=60, seed=3))


def _hostile_file(path: Path) -> dict[int, str]:
    """Good lines with hostile ones between them; returns line number -> expected reason."""
    measurements = _measurements(6)
    lone_surrogate = dict(measurements[1], probe_cc="\ud800")
    huge_round = json.loads(json.dumps(measurements[2]))
    huge_round["annotations"]["round"] = 2**63
    huge_round_text = json.loads(json.dumps(measurements[3]))
    huge_round_text["annotations"]["round"] = "99999999999999999999"
    surrogate_pair = dict(measurements[4], probe_network_name="Net \ud83d\ude00")
    lines = [measurements[0], lone_surrogate, huge_round, huge_round_text, surrogate_pair,
             measurements[5]]
    path.write_text("\n".join(json.dumps(m) for m in lines) + "\n")
    return {2: "lone surrogate \\ud800", 3: "annotations.round: 9223372036854775808",
            4: "annotations.round: 99999999999999999999"}


def test_a_lone_surrogate_or_a_huge_round_drops_only_its_line(tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    expected = _hostile_file(path)
    with MeasurementStore(tmp_path / "obs.chdb") as store:
        report = store.ingest_files([path])
        assert {e.line: e.message for e in report.errors}.keys() == expected.keys()
        for error in report.errors:
            assert expected[error.line] in error.message, error
            assert "\n" not in str(error)
        assert report.stored == store.count() == 3  # lines 1, 5 (a valid pair) and 6
        assert store.series()  # the store is still readable


def test_the_sqlite_store_drops_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "hostile.jsonl"
    expected = _hostile_file(path)
    with SqliteStore(tmp_path / "old.sqlite") as store:
        report = store.ingest_files([path])
    assert {e.line for e in report.errors} == expected.keys()
    assert report.stored == 3


def test_many_bad_lines_are_summarised_on_the_terminal(tmp_path: Path) -> None:
    good = [json.dumps(m) for m in _measurements(2)]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join([good[0].encode(), *[b"{oops"] * 300,
                                 *[b'{"x": "\xff"}'] * 200, good[1].encode()]) + b"\n")
    db = tmp_path / "cli.chdb"
    command = [sys.executable, "-m", "noisewall", "observe", "ingest", str(path), "--db", str(db)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    stderr = result.stderr.strip().splitlines()
    assert len(stderr) == 11
    assert stderr[0].startswith(f"noisewall: {path}:2: bad JSON")
    assert stderr[-1] == ("noisewall: and 490 more rejected lines: 290 bad JSON, "
                          "200 not UTF-8")
    assert "2 stored, 0 already stored, 500 rejected (502 lines)" in result.stdout
