"""A scenario's ``wechat`` section: the rival's filter lists and what the keyword probe sends.

::

    wechat:
      note: "..."                       # where the terms and dates come from
      candidates:                       # what the keyword probe sends each round
        - {id: lawyer, text: "...", scope: one_to_one}
      images:                           # and the images it sends (files beside the scenario)
        - {id: chair-copy, file: wechat-2017/empty-chair-forwarded.jpg}
      lists:                            # the server's filter lists (docs/wechat.md)
        keywords: [...]

The lists, with their time windows, are the ground truth: a candidate is
filtered for mainland accounts while some active combination (or listed
image, within its distance) matches it, and never for international ones.
Image files, in the candidates and in the lists, are read relative to the
scenario's folder (:func:`noisewall.lab.scenario.parse_scenario`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from noisewall.messenger.wechat.filters import FilterLists
from noisewall.messenger.wechat.lists import FilterListError, filter_lists_from_node, located
from noisewall.probe.keyword import ImageCandidate, KeywordCandidate
from noisewall.probe.keyword_file import checked_candidates
from noisewall.yamlspec import LineTracker, SpecError, SpecPath, validation_error


class _PlanSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    note: str | None = None
    candidates: tuple[KeywordCandidate, ...] = Field(min_length=1)
    images: tuple[ImageCandidate, ...] = ()
    lists: dict[str, object]


@dataclass(frozen=True)
class WeChatPlan:
    """The rival's lists and the keyword probe's candidates, validated."""

    lists: FilterLists
    candidates: tuple[KeywordCandidate, ...]
    images: tuple[ImageCandidate, ...] = ()
    note: str | None = None


def parse_wechat_plan(node: yaml.Node, source: str, error: type[SpecError], base: Path,
                      at: SpecPath = ("wechat",)) -> WeChatPlan:
    """The plan in ``node`` (at ``at`` in its document); ``error`` (file:line: field) if invalid.

    Image files are read relative to ``base``.
    """
    tracker = LineTracker(source, error, "wechat section")
    data = tracker.convert(node, at)
    tracker.lines[()] = tracker.lines[at]
    try:
        spec = _PlanSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, tracker.lines, source, error, located(at)) from None
    images = checked_candidates(spec.candidates, spec.images, base=base, lines=tracker.lines,
                                source=source, error=error, at=at)
    lists_node = next(value for key, value in node.value
                      if isinstance(key, yaml.ScalarNode) and key.value == "lists")
    try:
        lists = filter_lists_from_node(lists_node, source, base, at=(*at, "lists"))
    except FilterListError as exc:
        raise error(source, exc.line, exc.field, exc.message) from None
    return WeChatPlan(lists, spec.candidates, images, spec.note)
