"""The store: idempotent ingest, per-line errors that lose nothing else, the CLI."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from noisewall.observatory.inputs import MAX_LINE_BYTES
from noisewall.observatory.sqlite_store import SqliteStore
from noisewall.observatory.store import FileError, MeasurementStore, SeriesKey, StoreError
from noisewall.observatory.synthetic import SyntheticNetwork, synthetic_measurements


def _lines(rounds: int = 10, seed: int = 1) -> list[str]:
    network = SyntheticNetwork("Net", "AS64500", ("direct", "control"))
    return [json.dumps(m) for m in synthetic_measurements(
        network, rounds=rounds, start=1_505_865_600, interval=60, seed=seed)]


def test_ingest_is_idempotent(store: MeasurementStore, tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(_lines()) + "\n")
    first = store.ingest_files([path])
    assert (first.lines, first.stored, first.already_stored, first.errors) == (20, 20, 0, [])
    again = store.ingest_files([path])
    assert (again.stored, again.already_stored, again.errors) == (0, 20, [])
    assert store.count() == 20
    rows = store.rows(SeriesKey("Net", "control", "text"))
    assert len(rows.times) == 10 and rows.times == sorted(rows.times)
    stored = store.raw_measurement(json.loads(_lines()[0])["id"])
    assert stored is not None and json.loads(stored) == json.loads(_lines()[0])


def test_a_batch_a_crash_cut_short_is_made_whole_by_ingesting_its_source_again(
        store: MeasurementStore, tmp_path: Path) -> None:
    """The two tables of a batch are written at once, so a crash can leave measurements
    whose results never landed; the same source ingested again writes its lines again.
    """
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(_lines()) + "\n")
    store.ingest_files([path])
    key = SeriesKey("Net", "control", "text")
    whole = store.rows(key)
    cut = sorted(json.loads(line)["id"] for line in _lines())[:7]
    store._engine.execute("DELETE FROM results WHERE measurement IN ("
                          + ", ".join(f"'{mid}'" for mid in cut) + ")")
    assert len(store.rows(key).times) < len(whole.times)
    copy = tmp_path / "copy.jsonl"  # the same lines from elsewhere are not written again
    copy.write_bytes(path.read_bytes())
    elsewhere = store.ingest_files([copy])
    assert (elsewhere.stored, elsewhere.already_stored, elsewhere.errors) == (0, 20, [])
    assert len(store.rows(key).times) < len(whole.times)
    again = store.ingest_files([path])
    assert (again.stored, again.already_stored, again.errors) == (0, 20, [])
    assert store.rows(key) == whole and store.count() == 20
    assert store._engine.rows("SELECT DISTINCT source FROM measurements FINAL") == [(str(path),)]


def test_bad_lines_are_reported_and_nothing_else_is_lost(store: MeasurementStore,
                                                         tmp_path: Path) -> None:
    good = _lines(rounds=5)
    wrong_type = json.loads(good[1])
    wrong_type["test_keys"]["features"]["voice"]["bytes"] = "lots"
    clash = json.loads(good[0])
    clash["probe_cc"] = "CN"
    lines = [good[0], good[2][:57], json.dumps(wrong_type), "", good[3],
             json.dumps(clash), good[3], good[4], good[5][:-1]]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))  # the last line is also cut short, with no newline
    report = store.ingest_files([path])
    assert {e.line for e in report.errors} == {2, 3, 6, 7, 9}
    by_line = {e.line: e for e in report.errors}
    assert "bad JSON" in by_line[2].message
    assert "features.voice.bytes" in by_line[3].message
    assert "different content" in by_line[6].message and f"{path}:1" in by_line[6].message
    assert "same measurement as" in by_line[7].message and f"{path}:5" in by_line[7].message
    assert str(by_line[2]).startswith(f"{path}:2: ")
    assert report.file_errors == []
    assert report.stored == 3 and store.count() == 3  # lines 1, 5 and 8


def test_unreadable_files_are_file_errors_and_the_others_are_ingested(
        store: MeasurementStore, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_lines(rounds=2)) + "\n")
    missing = tmp_path / "missing.jsonl"
    under_a_file = good / "m.jsonl"
    report = store.ingest_files([missing, good, under_a_file])
    assert report.errors == []
    assert report.file_errors == [FileError(str(missing), "No such file or directory"),
                                  FileError(str(under_a_file), "Not a directory")]
    assert str(report.file_errors[0]) == f"{missing}: cannot read: No such file or directory"
    assert (report.lines, report.stored) == (4, 4)


def test_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a store at all" * 100)
    with pytest.raises(StoreError, match=r"not a measurement store .*migrate"):
        MeasurementStore(path)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(StoreError, match="a folder that is not a measurement store"):
        MeasurementStore(folder)
    newer = tmp_path / "newer.db"
    with MeasurementStore(newer) as store:
        store._engine.execute("INSERT INTO meta VALUES ('schema_version', '99')")
        store._engine.execute("OPTIMIZE TABLE meta FINAL")
    with pytest.raises(StoreError, match="schema version 99"):
        MeasurementStore(newer)


def test_a_schema_2_store_is_brought_to_this_version_and_keeps_its_measurements(
        tmp_path: Path) -> None:
    path, lines = tmp_path / "old.db", _lines()
    with MeasurementStore(path) as store:
        store.ingest_lines(lines[:10], source="first")
        engine = store._engine  # as schema 2 kept it: the digest stored in a column of its own
        engine.execute("ALTER TABLE measurements DROP COLUMN digest")
        engine.execute("ALTER TABLE measurements ADD COLUMN digest FixedString(16) AFTER id")
        engine.execute("ALTER TABLE measurements UPDATE digest = sipHash128(raw) WHERE 1 "
                       "SETTINGS mutations_sync = 2")
        engine.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    with MeasurementStore(path) as store:
        again = store.ingest_lines(lines, source="second")
        changed = json.loads(lines[0])
        changed["probe_cc"] = "XX"
        clash = store.ingest_lines([json.dumps(changed)], source="third")
        assert store._engine.rows("SELECT value FROM meta FINAL") == [("3",)]
        assert store.count() == 20
    assert (again.stored, again.already_stored, again.errors) == (10, 10, [])
    assert "with different content" in str(clash.errors[0])


def test_ingest_measurements_api_takes_dicts(store: MeasurementStore) -> None:
    network = SyntheticNetwork("Net", "AS64500")
    report = store.ingest_measurements(synthetic_measurements(
        network, rounds=3, start=0, interval=60, seed=2))
    assert (report.stored, report.errors) == (3, [])
    assert store.time_range() == (0.0, 120.0)


def test_cli_ingest_reports_each_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    good = _lines(rounds=2)
    path.write_text("\n".join([good[0], "{oops", good[1], good[2]]) + "\n")
    db = tmp_path / "cli.db"
    command = [sys.executable, "-m", "noisewall", "observe", "ingest", str(path), "--db", str(db)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"noisewall: {path}:2: bad JSON: Expecting property name " \
                                    "enclosed in double quotes at column 2"
    assert "3 stored, 0 already stored, 1 rejected (4 lines)" in result.stdout
    again = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60,
                           check=False)
    report = json.loads(again.stdout)
    assert (report["stored"], report["already_stored"], len(report["errors"])) == (0, 3, 1)


def test_cli_ingest_reports_a_missing_file_as_a_file_error(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(_lines(rounds=1)) + "\n")
    missing = tmp_path / "missing.jsonl"
    db = tmp_path / "cli.db"
    command = [sys.executable, "-m", "noisewall", "observe", "ingest", str(missing), str(good),
               "--db", str(db)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"noisewall: error: {missing}: cannot read: "
                                     "No such file or directory")
    assert result.stdout.strip() == ("2 stored, 0 already stored, 0 rejected (2 lines), "
                                     "1 file not read")
    again = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert again.returncode == 1
    report = json.loads(again.stdout)
    assert (report["already_stored"], report["errors"]) == (2, [])
    assert report["file_errors"] == [{"source": str(missing),
                                      "message": "No such file or directory"}]


def test_a_truncated_gzip_is_one_error_and_a_rerun_completes_it(store: MeasurementStore,
                                                                 tmp_path: Path) -> None:
    lines = _lines(rounds=3000)  # 6000 lines: more than one batch before the cut
    whole = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(whole[:len(whole) * 3 // 4])
    report = store.ingest_files([path])
    (error,) = report.file_errors
    assert "broken gzip stream" in str(error) and report.errors == []
    assert 0 < report.stored == store.count() < len(lines)
    path.write_bytes(whole)
    rerun = store.ingest_files([path])
    assert (rerun.already_stored, rerun.errors) == (report.stored, [])
    assert store.count() == len(lines)


def test_a_200_mb_line_is_one_error_and_is_never_held_whole(store: MeasurementStore,
                                                            tmp_path: Path) -> None:
    good = _lines(rounds=2)
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        out.write(good[0].encode() + b"\n" + b'{"pad": "')
        chunk = b"x" * (1 << 20)
        for _ in range(200):
            out.write(chunk)
        out.write(b'"}\n' + "\n".join(good[1:]).encode() + b"\n")
    report = store.ingest_files([path])
    assert [(e.line, e.message) for e in report.errors] == [
        (2, f"line longer than {MAX_LINE_BYTES >> 20} MiB; skipped")]
    assert report.stored == store.count() == len(good)


def test_a_non_utf8_line_is_one_error(store: MeasurementStore, tmp_path: Path) -> None:
    good = [line.encode() for line in _lines(rounds=2)]
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b"\n".join([good[0], good[1].replace(b'"Net"', b'"N\xe9t"'), *good[2:]]))
    report = store.ingest_files([path])
    assert [(e.line, e.message.split(":")[0]) for e in report.errors] == [(2, "not UTF-8")]
    assert report.stored == store.count() == len(good) - 1


def test_two_ingests_of_one_file_at_once_store_it_once(tmp_path: Path) -> None:
    lines = _lines(rounds=2000)
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    db = tmp_path / "obs.db"
    command = [sys.executable, "-m", "noisewall", "observe", "ingest", str(path), "--db",
               str(db), "--json"]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    results = [(p.communicate(timeout=300), p.returncode) for p in both]
    reports = [json.loads(out) for (out, _), code in results if code == 0]
    for (out, err), code in results:
        if code != 0:  # the only other outcome: one clear line naming the busy store
            assert out == b"" and len(err.splitlines()) == 1
            assert b"open in another process" in err and b"Traceback" not in err
    assert sum(r["stored"] for r in reports) == len(lines)
    assert all(r["errors"] == [] for r in reports)
    with MeasurementStore(db) as store:
        assert store.count() == len(lines)


def test_an_sqlite_store_migrates_once(tmp_path: Path) -> None:
    old = tmp_path / "old.sqlite"
    with SqliteStore(old) as sqlite:
        assert sqlite.ingest_lines(_lines(rounds=5)).stored == 10
    db = tmp_path / "new.chdb"
    command = [sys.executable, "-m", "noisewall", "observe", "migrate", str(old), "--db", str(db),
               "--json"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["stored"] == 10
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert json.loads(again.stdout)["already_stored"] == 10
    with MeasurementStore(db) as store:
        assert store.count() == 10
        assert store.rows(SeriesKey("Net", "control", "text")).times == [
            1_505_865_600 + 60 * r for r in range(5)]
    with pytest.raises(StoreError, match="migrate"):
        MeasurementStore(old)
