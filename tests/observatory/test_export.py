"""``observe export``: the per-feature results as jsonl, csv and parquet, read back."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from noisewall.observatory.store import MeasurementStore
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements

START = 1_505_865_600.0


def _store(tmp_path: Path) -> Path:
    network = SyntheticNetwork("Net", "AS64500", ("direct",), features=("text", "photo"),
                               events=(Injected("blocked", "photo", 2, None),))
    db = tmp_path / "obs.chdb"
    with MeasurementStore(db) as store:
        report = store.ingest_measurements(synthetic_measurements(
            network, rounds=4, start=START, interval=60, seed=1, stray_failure_rate=0))
        assert report.stored == 4
    return db


def _export(db: Path, fmt: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "noisewall", "observe", "export", "--db",
                           str(db), "--format", fmt, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=120, check=False)


def test_export_writes_every_row_in_each_format(tmp_path: Path) -> None:
    db = _store(tmp_path)
    for fmt in ("jsonl", "csv", "parquet"):
        done = _export(db, fmt, tmp_path / f"results.{fmt}")
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == f"8 rows written to {tmp_path / f'results.{fmt}'}"
    rows = [json.loads(line) for line in
            (tmp_path / "results.jsonl").read_text().splitlines()]
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    with (tmp_path / "results.csv").open(newline="") as handle:
        text_rows = list(csv.DictReader(handle))
    assert len(rows) == len(table) == len(text_rows) == 8  # 4 rounds x 2 features
    blocked = [r for r in rows if r["feature"] == "photo" and not r["ok"]]
    assert [r["time_utc"] for r in blocked] == ["2017-09-20 00:02:00", "2017-09-20 00:03:00"]
    assert blocked[0]["failure"] == "connection_reset" and blocked[0]["throughput_kbps"] is None
    first = rows[0]
    assert set(first) == {"network", "vantage", "feature", "time_utc", "time", "measurement",
                          "ok", "failure", "throughput_kbps"}
    assert table[0] == first
    assert text_rows[0]["measurement"] == first["measurement"]
    assert text_rows[0]["failure"] == ""  # a null is an empty field


def test_export_window_and_bad_format(tmp_path: Path) -> None:
    db = _store(tmp_path)
    out = tmp_path / "late.jsonl"
    done = _export(db, "jsonl", out, "--since", "2017-09-20 00:02")
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 4
    bad = _export(db, "xlsx", tmp_path / "x.xlsx")
    assert bad.returncode == 2 and "xlsx" in bad.stderr
    missing = _export(tmp_path / "none.chdb", "csv", tmp_path / "x.csv")
    assert missing.returncode == 1 and "no measurement store" in missing.stderr
