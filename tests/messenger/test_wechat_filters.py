"""WeChat-mode filter lists: combination matching (sans-IO) and list files' errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from noisewall.messenger.wechat.filters import FilterLists, KeywordRule
from noisewall.messenger.wechat.images import ImageError, perceptual_hash
from noisewall.messenger.wechat.lists import (
    FilterListError,
    load_filter_lists,
    parse_filter_lists,
)
from tests.messenger.wechat_helpers import drawing, encoded, near_copy

LISTS = """\
keywords:
  - id: lawyer
    terms: [Wang Quanzhang, human rights lawyer]
  - id: congress
    terms: [十九大, 习]
    scopes: [group]
  - id: october
    terms: [xi, congress]
    active: {from: 2017-10-10, until: 2017-10-30}
"""
OCT_15 = datetime(2017, 10, 15, tzinfo=UTC).timestamp()
NOV_1 = datetime(2017, 11, 1, tzinfo=UTC).timestamp()


def lists() -> FilterLists:
    return parse_filter_lists(LISTS, "lists.yaml")


def test_every_term_of_a_combination_in_any_order_matches() -> None:
    text = "Human rights lawyer detained: news of WANG QUANZHANG"
    rule = lists().match_text(text, "one_to_one", OCT_15)
    assert rule is not None and rule.id == "lawyer"


def test_some_terms_alone_pass() -> None:
    assert lists().match_text("Wang Quanzhang had lunch", "one_to_one", OCT_15) is None
    assert lists().match_text("a human rights lawyer", "group", OCT_15) is None


def test_a_group_only_combination_passes_one_to_one() -> None:
    text = "十九大 习近平"
    assert lists().match_text(text, "one_to_one", OCT_15) is None
    rule = lists().match_text(text, "group", OCT_15)
    assert rule is not None and rule.id == "congress"


def test_a_combination_acts_only_inside_its_window() -> None:
    assert lists().match_text("xi at the congress", "one_to_one", OCT_15) is not None
    assert lists().match_text("xi at the congress", "one_to_one", NOV_1) is None


def test_ten_thousand_combinations_find_the_one_that_matches() -> None:
    rules = [KeywordRule(f"r{n}", (f"term{n}x", f"other{n}y"), frozenset({"one_to_one"}))
             for n in range(10_000)]
    big = FilterLists(rules)
    hit = big.match_text("other9876y and TERM9876X", "one_to_one", 0)
    assert hit is not None and hit.id == "r9876"
    assert big.match_text("term9876x and other9875y", "one_to_one", 0) is None


def test_images_within_the_distance_match(tmp_path: Path) -> None:
    (tmp_path / "listed.png").write_bytes(encoded(drawing(1)))
    loaded = parse_filter_lists("images:\n  - {id: pic, file: listed.png, distance: 6}\n",
                                "l.yaml", tmp_path)
    hit = loaded.match_image(perceptual_hash(near_copy(1)), "group", 0)
    assert hit is not None and hit.id == "pic"
    assert loaded.match_image(perceptual_hash(encoded(drawing(2))), "group", 0) is None


def test_unreadable_image_bytes_are_a_typed_error() -> None:
    with pytest.raises(ImageError):
        perceptual_hash(b"\x89PNG\r\n\x1a\n not really")


@pytest.mark.parametrize(("text", "error"), [
    ("keywords:\n  - terms: [a, b\n", "bad.yaml:3: invalid YAML"),
    ("keywords:\n  - id: x\n    terms: []\n", "bad.yaml:3: keywords[0].terms: must not be empty"),
    ("keywords:\n  - terms: [a, '  ']\n", "bad.yaml:2: keywords[0].terms[1]: a term must not"),
    ("keywords:\n  - terms: [a]\n    scopes: [dm]\n", "bad.yaml:3: keywords[0].scopes[0]: unknown"),
    ("keywords:\n  - terms: [a]\n    colour: red\n", "bad.yaml:3: keywords[0].colour: unknown key"),
    ("keywords:\n  - {id: x, terms: [a]}\n  - {id: x, terms: [b]}\n",
     "bad.yaml:3: keywords[1].id: duplicate id 'x'"),
    ("images:\n  - {phash: zz}\n", "bad.yaml:2: images[0]: 'zz' is not a 64-bit"),
    ("images:\n  - {id: p}\n", "bad.yaml:2: images[0]: an image needs exactly one"),
    ("keywords:\n  - terms: [a]\n    active: {from: 2017-11-01, until: 2017-10-01}\n",
     "bad.yaml:3: keywords[0].active[0]: 'from' must be before 'until'"),
    ("- just a list\n", "bad.yaml:1: a filter list is a mapping"),
])
def test_bad_lists_name_file_line_and_field(text: str, error: str) -> None:
    with pytest.raises(FilterListError) as caught:
        parse_filter_lists(text, "bad.yaml")
    assert str(caught.value).startswith(error), str(caught.value)


def test_an_unreadable_listed_image_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    path = tmp_path / "lists.yaml"
    path.write_text("images:\n  - id: ok\n    phash: cee5969a0ae906d9\n"
                    "  - id: broken\n    file: broken.png\n  - id: gone\n    file: gone.png\n")
    with pytest.raises(FilterListError) as caught:
        load_filter_lists(path)
    assert str(caught.value).startswith(f"{path}:5: images[1].file: ")
    assert "not a readable image" in str(caught.value)
    (tmp_path / "broken.png").write_bytes(encoded(drawing(3)))
    with pytest.raises(FilterListError) as missing:
        load_filter_lists(path)
    assert str(missing.value).startswith(f"{path}:7: images[2].file: cannot read")
