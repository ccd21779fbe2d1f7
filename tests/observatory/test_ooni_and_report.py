"""OONI's whatsapp example through ingest, analysis and report; the HTML and CLI reports."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

from noisewall.observatory import (
    GroundTruthBand,
    MeasurementStore,
    ReportTable,
    analyze,
    ingest_measurements,
    write_html_report,
)
from noisewall.observatory.synthetic import Injected, SyntheticNetwork, synthetic_measurements
from noisewall.records.measurement import ooni_time, parse_ooni_time
from tests.observatory.conftest import ooni_whatsapp_example


def test_ts018_example_ingests_and_analyses(store: MeasurementStore, tmp_path: Path) -> None:
    path = tmp_path / "whatsapp.jsonl"
    path.write_text(json.dumps(ooni_whatsapp_example()) + "\n")
    report = store.ingest_files([path])
    assert (report.stored, report.errors) == (1, [])
    assert {(k.network, k.vantage, k.feature) for k in store.series()} == {
        ("Vodafone Italia S.p.A.", "ooni", f) for f in ("whatsapp_endpoints", "registration_server",
                                                   "whatsapp_web")}
    assert analyze(store) == []
    html = write_html_report(tmp_path / "r.html", store, []).read_text()
    assert "Vodafone Italia S.p.A." in html and "registration" in html


def test_ooni_series_with_blocked_registration(store: MeasurementStore) -> None:
    example = ooni_whatsapp_example()
    start = parse_ooni_time(example["measurement_start_time"])
    hourly = []
    for hour in range(80):
        measurement = copy.deepcopy(example)
        measurement["measurement_start_time"] = ooni_time(start + 3600 * hour)
        if hour >= 40:
            keys = measurement["test_keys"]
            keys["registration_server_status"] = "blocked"
            keys["registration_server_failure"] = "connection_reset"
        hourly.append(measurement)
    assert ingest_measurements(store, hourly).stored == 80
    (event,) = analyze(store)
    assert (event.vantage, event.feature, event.kind, event.failure) == (
        "ooni", "registration_server", "blocked", "connection_reset")
    assert event.onset == start + 40 * 3600 and event.end is None


def _filled(store: MeasurementStore) -> None:
    network = SyntheticNetwork("Net <A>", "AS64500", ("direct", "control"), ("text", "photo"),
                               events=(Injected("blocked", "photo", 50, 90),
                                       Injected("throttled", "text", 120, 160)))
    store.ingest_measurements(synthetic_measurements(network, rounds=200, start=1_505_865_600,
                                                     interval=60, seed=4))


def test_html_report_is_self_contained(store: MeasurementStore, tmp_path: Path) -> None:
    _filled(store)
    events = analyze(store)
    assert [e.kind for e in events] == ["blocked", "throttled"]
    truth = [GroundTruthBand("SNI reset <media>", 1_505_865_600 + 50 * 60,
                             1_505_865_600 + 90 * 60, feature="photo")]
    extra = [ReportTable("Score", ("metric", "value"), [("onset error <rounds>", 0)])]
    path = write_html_report(tmp_path / "report.html", store, events, ground_truth=truth,
                             extra_tables=extra)
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html and not re.search(r"(src|href)=", html)
    # One grid for the one network, one timeline per (vantage, feature).
    assert html.count('<svg class="grid"') == 1 and html.count('role="img"') == 5
    assert "Net &lt;A&gt;" in html and "<A>" not in html
    assert "SNI reset &lt;media&gt;" in html and "onset error &lt;rounds&gt;" in html
    assert "2017-09-20 00:50:00" in html  # the blocked event's onset in the events table
    assert html.count("#d62728") >= 2 and "#ff7f0e" in html  # event bands drawn
    assert not list(tmp_path.glob("*.partial"))
    window = write_html_report(tmp_path / "late.html", store, events,
                               since=1_505_865_600 + 100 * 60).read_text()
    assert "2017-09-20 00:50:00" not in window and "throttled" in window


def test_cli_analyze_and_report(tmp_path: Path) -> None:
    db = str(tmp_path / "obs.chdb")
    with MeasurementStore(db) as store:  # one process at a time holds a store
        _filled(store)
    run = [sys.executable, "-m", "noisewall", "observe"]
    analyzed = subprocess.run([*run, "analyze", "--db", db, "--json"], capture_output=True,
                              text=True, timeout=60, check=True)
    events = json.loads(analyzed.stdout)
    assert [(e["feature"], e["kind"]) for e in events] == [("photo", "blocked"),
                                                           ("text", "throttled")]
    html = tmp_path / "out.html"
    reported = subprocess.run([*run, "report", "--db", db, "--html", str(html), "--since",
                               "2017-09-20 02:00"], capture_output=True, text=True, timeout=60,
                              check=True)
    assert "throttled" in reported.stdout and "blocked" not in reported.stdout
    assert html.is_file() and "measurements per series" in reported.stdout
    missing = subprocess.run([*run, "analyze", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1 and "no measurement store" in missing.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("throttle:\n  drop_factor: 0.5\n")
    bad = subprocess.run([*run, "analyze", "--db", db, "--config", str(config)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"noisewall: error: {config}:2: throttle.drop_factor: "
                                  "must be greater than 1")


def test_bench_observe_quick_json() -> None:
    result = subprocess.run([sys.executable, "-m", "noisewall", "bench", "observe", "--quick",
                             "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    lines = json.loads(result.stdout)["results"]
    assert [line["unit"] for line in lines] == ["measurements/s"] * 3 + ["rows/s", "MB",
                                                                         "episodes"]
    assert all(line["value"] > 0 and line["baseline"] > 0 for line in lines)
    assert lines[-1]["baseline"] == 20 and lines[-1]["value"] >= 18
