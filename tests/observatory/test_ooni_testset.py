"""Real OONI measurements (2016-2023, ooniprobe 2.x to probe-cli 3.20) as OONI published them."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from noisewall.observatory.store import MeasurementStore
from noisewall.records.measurement import parse_ooni_time
from tests.observatory.conftest import ooni_testset

# Written out here rather than taken from the product, so a wrong mapping there fails:
# test -> (feature, status key, status means ok when, failure key).
VERDICTS: dict[str, list[tuple[str, str, object, str | None]]] = {
    "whatsapp": [("whatsapp_endpoints", "whatsapp_endpoints_status", "ok", None),
                 ("registration_server", "registration_server_status", "ok",
                  "registration_server_failure"),
                 ("whatsapp_web", "whatsapp_web_status", "ok", "whatsapp_web_failure")],
    "signal": [("signal_backend", "signal_backend_status", "ok", "signal_backend_failure")],
    "telegram": [("telegram_tcp", "telegram_tcp_blocking", False, None),
                 ("telegram_http", "telegram_http_blocking", False, None),
                 ("telegram_web", "telegram_web_status", "ok", "telegram_web_failure")],
    "facebook_messenger": [("facebook_tcp", "facebook_tcp_blocking", False, None),
                           ("facebook_dns", "facebook_dns_blocking", False, None)],
}

Row = tuple[str, str, str, float, bool, str | None]


def _measurements() -> list[dict[str, Any]]:
    lines = ooni_testset("im-tests.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _expected(measurements: list[dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    for m in measurements:
        keys = m["test_keys"]
        for feature, status, ok_value, failure in VERDICTS[m["test_name"]]:
            if keys.get(status) is None:
                continue
            rows.append((m.get("probe_network_name") or m["probe_asn"], "ooni", feature,
                         parse_ooni_time(m["measurement_start_time"]), keys[status] == ok_value,
                         keys.get(failure) or None if failure else None))
    return sorted(rows, key=repr)


def _stored(store: MeasurementStore) -> list[Row]:
    rows: list[Row] = []
    for key in store.series():
        series = store.rows(key)
        rows.extend((key.network, key.vantage, key.feature, t, ok, failure)
                    for t, ok, failure in zip(series.times, series.ok, series.failures,
                                              strict=True))
    return sorted(rows, key=repr)


def test_the_set_spans_years_probes_and_all_four_tests() -> None:
    sources = json.loads(ooni_testset("SOURCES.json").read_text())["files"]["im-tests.jsonl"]
    measurements = _measurements()
    assert len(sources) == len(measurements)
    assert {m["test_name"] for m in measurements} == set(VERDICTS)
    assert len({m["measurement_start_time"][:4] for m in measurements}) >= 5
    assert {m["software_name"] for m in measurements} >= {"ooniprobe", "miniooni",
                                                          "ooniprobe-android"}
    assert '"failure":false' in ooni_testset("im-tests.jsonl").read_text()  # legacy probes


def test_every_im_measurement_is_stored_with_its_own_verdicts(tmp_path: Path) -> None:
    measurements = _measurements()
    with MeasurementStore(tmp_path / "obs.db") as store:
        report = store.ingest_files([ooni_testset("im-tests.jsonl")])
        assert (report.errors, report.file_errors, report.skipped) == ([], [], Counter())
        assert report.stored == store.count() == len(measurements)
        assert _stored(store) == _expected(measurements)
        blocked = {row[2] for row in _stored(store) if not row[4]}
        assert blocked >= {"whatsapp_web", "signal_backend", "telegram_web"}
        again = store.ingest_files([ooni_testset("im-tests.jsonl")])
        assert (again.stored, again.already_stored, again.errors) == (0, len(measurements), [])


def test_gzip_json_and_folders_ingest_identically(tmp_path: Path) -> None:
    plain = ooni_testset("im-tests.jsonl")
    gzipped = tmp_path / "im.jsonl.gz"
    gzipped.write_bytes(gzip.compress(plain.read_bytes()))
    folder = tmp_path / "one-per-file"
    folder.mkdir()
    for n, m in enumerate(_measurements()):
        if n % 2:
            (folder / f"{n:02}.json").write_text(json.dumps(m, indent=2))
        else:
            (folder / f"{n:02}.json.gz").write_bytes(gzip.compress(json.dumps(m).encode()))
    stored = []
    for i, source in enumerate((plain, gzipped, folder)):
        with MeasurementStore(tmp_path / f"{i}.db") as store:
            report = store.ingest_files([source])
            assert (report.errors, report.file_errors) == ([], [])
            stored.append(_stored(store))
    assert stored[0] == stored[1] == stored[2] and stored[0]


def test_other_tests_give_one_line_per_test_name(tmp_path: Path) -> None:
    other = ooni_testset("other-tests.jsonl")
    copy = tmp_path / "all.jsonl"
    copy.write_bytes(other.read_bytes() * 3 + ooni_testset("im-tests.jsonl").read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "noisewall", "observe", "ingest", str(copy),
         "--db", str(tmp_path / "obs.db")], capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 0, result.stderr
    names = Counter(json.loads(line)["test_name"] for line in other.read_text().splitlines())
    assert result.stderr.splitlines() == [
        f"noisewall: skipped {3 * n} {name} measurements (not analysed)"
        for name, n in sorted(names.items())]
    assert result.stdout.startswith(f"{len(_measurements())} stored")


def test_a_gzip_named_jsonl_is_one_clear_error(tmp_path: Path) -> None:
    wrong = tmp_path / "im.jsonl"
    wrong.write_bytes(gzip.compress(ooni_testset("im-tests.jsonl").read_bytes()))
    with MeasurementStore(tmp_path / "obs.db") as store:
        report = store.ingest_files([wrong])
        assert report.errors == [] and store.count() == 0
        (error,) = report.file_errors
        assert "gzip-compressed" in error.message and ".jsonl.gz" in error.message


def test_stdin_takes_plain_and_gzip(tmp_path: Path) -> None:
    data = ooni_testset("im-tests.jsonl").read_bytes()
    for i, payload in enumerate((data, gzip.compress(data))):
        result = subprocess.run(
            [sys.executable, "-m", "noisewall", "observe", "ingest", "-", "--json",
             "--db", str(tmp_path / f"{i}.db")], input=payload, capture_output=True, timeout=120,
            check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["stored"] == len(_measurements())
