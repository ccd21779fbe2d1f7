"""Every vector in ../shared/vectors passes, none skipped, and a bad vector fails loudly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from noisewall.noise.vectors import VectorFormatError, run_vector_file
from tests.conftest import shared_file


def test_all_cacophony_vectors_pass() -> None:
    report = run_vector_file(shared_file("vectors/cacophony.txt"))
    assert report.failures == []
    assert (report.passed, report.failed, report.skipped) == (944, 0, 0)


def test_all_noisesocket_vectors_pass() -> None:
    report = run_vector_file(shared_file("vectors/noisesocket-subset.json"))
    assert report.failures == []
    assert (report.passed, report.failed, report.skipped) == (48, 0, 0)


def _first_vector(name: str) -> dict[str, object]:
    vectors = json.loads(shared_file(name).read_text())["vectors"]
    return dict(vectors[0])


@pytest.mark.parametrize("name", ["vectors/cacophony.txt", "vectors/noisesocket-subset.json"])
def test_a_corrupted_vector_is_reported_as_failed(name: str, tmp_path: Path) -> None:
    vector = _first_vector(name)
    messages = [dict(m) for m in vector["messages"]]  # type: ignore[attr-defined]
    key = "ciphertext" if "ciphertext" in messages[1] else "message"
    flipped = bytearray.fromhex(messages[1][key])
    flipped[-1] ^= 1
    messages[1][key] = flipped.hex()
    vector["messages"] = messages
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"vectors": [vector]}))
    report = run_vector_file(path)
    assert (report.passed, report.failed) == (0, 1)
    assert "message 1" in report.failures[0].reason


def test_unsupported_protocol_is_skipped_not_passed(tmp_path: Path) -> None:
    vector = _first_vector("vectors/cacophony.txt")
    vector["protocol_name"] = "Noise_NN_25519_AESGCM_SHA3"
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"vectors": [vector]}))
    report = run_vector_file(path)
    assert (report.passed, report.failed, report.skipped) == (0, 0, 1)
    assert "SHA3" in report.skips[0].reason


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json", "not valid JSON"),
        ('{"vectors": 3}', "'vectors' list"),
        ('{"vectors": [{"messages": []}]}', "vector 0: field 'protocol_name'"),
        ('{"vectors": [1, {"protocol_name": "Noise_NN_25519_AESGCM_SHA256", "messages": '
         '[{"payload": "zz", "ciphertext": ""}]}]}', "vector 0: a vector must be"),
        ('{"vectors": [{"protocol_name": "Noise_NN_25519_AESGCM_SHA256", "messages": '
         '[{"payload": "zz", "ciphertext": ""}]}]}', "vector 0: field 'payload' is not valid hex"),
    ],
)
def test_malformed_file_names_file_and_vector(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VectorFormatError) as info:
        run_vector_file(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)
