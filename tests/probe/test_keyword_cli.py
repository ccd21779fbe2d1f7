"""``noisewall probe --features keyword`` as a user runs it against a WeChat-mode server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from noisewall.clock import SystemClock
from noisewall.messenger.server import ChatServer
from noisewall.probe.keyword_file import KeywordFileError, load_keyword_candidates
from tests.messenger.wechat_helpers import drawing, encoded, near_copy, wechat_server
from tests.probe.test_probe_cli import _noisewall

LISTS = """\
keywords:
  - {id: lawyer, terms: [Wang Quanzhang, human rights lawyer]}
images:
  - {id: banner, phash: PHASH}
"""
CANDIDATES = """\
control: the weather is fine today
candidates:
  - {id: lawyer, text: "Wang Quanzhang is a human rights lawyer"}
  - {id: lawyer-name, text: "news of Wang Quanzhang", scope: group}
images:
  - {id: banner-copy, file: copy.jpg, scope: group}
  - {id: other, file: other.png}
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ChatServer]:
    async with wechat_server(tmp_path / "server", LISTS, SystemClock()) as chat:
        yield chat


def _candidates(folder: Path, text: str = CANDIDATES) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "copy.jpg").write_bytes(near_copy(1))  # near the listed drawing 1
    (folder / "other.png").write_bytes(encoded(drawing(7)))
    path = folder / "kw.yaml"
    path.write_text(text)
    return path


async def test_keyword_feature_writes_one_measurement_per_round_and_region(
        server: ChatServer, tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    code, _, stderr = await _noisewall(
        "probe", "--server", f"127.0.0.1:{server.address.port}", "--features", "keyword",
        "--keywords", str(_candidates(tmp_path / "tests")), "--count", "2", "--every", "0s",
        "--wait", "2s", "--out", str(out), "--state", str(tmp_path / "state"),
        "--asn", "AS4134", "--cc", "CN")
    assert code == 0, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(m["annotations"]["round"], m["annotations"]["vantage"]) for m in lines] == [
        ("0", "mainland"), ("0", "international"), ("1", "mainland"), ("1", "international")]
    for m in lines:
        keys = m["test_keys"]
        assert m["test_name"] == "noisewall_keyword_filtering" and m["probe_asn"] == "AS4134"
        assert keys["failure"] is None and keys["control"] == {"one_to_one": True, "group": True}
        arrived = {name: outcome["arrived"] for section in ("combinations", "images")
                   for name, outcome in keys[section].items()}
        mainland = keys["region"] == "mainland"
        assert arrived == {"lawyer": not mainland, "lawyer-name": True,
                           "banner-copy": not mainland, "other": True}, m
    assert stderr.count("mainland: keyword: 2 not delivered") == 2, stderr
    assert stderr.count("international: keyword: 0 not delivered") == 2, stderr


@pytest.mark.parametrize(("args", "says"), [
    (["--features", "keyword"], "needs --keywords"),
    (["--features", "text", "--keywords", "KW"], "add it to --features"),
    (["--features", "keyword", "--keywords", "KW", "--regions", "mars"], "unknown region"),
])
async def test_bad_keyword_arguments_are_one_line(tmp_path: Path, args: list[str],
                                                  says: str) -> None:
    kw = str(_candidates(tmp_path))
    code, stdout, stderr = await _noisewall(
        "probe", "--server", "127.0.0.1:1", "--state", str(tmp_path),
        *(kw if a == "KW" else a for a in args))
    assert code != 0 and stdout == ""
    assert says in stderr and "Traceback" not in stderr


async def test_an_invalid_candidates_file_is_one_line_naming_its_line(tmp_path: Path) -> None:
    kw = _candidates(tmp_path, CANDIDATES.replace("scope: group}", "scope: groups}", 1))
    code, _, stderr = await _noisewall("probe", "--server", "127.0.0.1:1", "--features",
                                       "keyword", "--keywords", str(kw), "--state",
                                       str(tmp_path))
    assert code == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert f"{kw}:4: candidates[1].scope: unknown value 'groups'" in stderr


@pytest.mark.parametrize(("text", "says"), [
    ("candidates: []\n", "1: nothing to test"),
    ("candidates:\n  - {id: a, text: x}\n  - {id: a, text: y}\n",
     "3: candidates[1].id: duplicate candidate 'a'"),
    ("images:\n  - {id: a, file: missing.png}\n", "2: images[0].file: cannot read"),
    ("images:\n  - {id: a, file: kw.yaml}\n", "2: images[0].file: 'KW': not a readable image"),
    ("candidates:\n  - {id: a, text: ''}\n",
     "2: candidates[0].text: string should have at least 1 character"),
    ("candidates:\n  - {id: a, text: x, colour: red}\n", "2: candidates[0].colour: unknown key"),
    ("candidates: [\n", "invalid YAML"),
])
def test_candidates_file_errors(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "kw.yaml"
    path.write_text(text)
    with pytest.raises(KeywordFileError) as caught:
        load_keyword_candidates(path)
    assert says.replace("KW", str(path)) in str(caught.value)
    assert str(caught.value).startswith(f"{path}:")
