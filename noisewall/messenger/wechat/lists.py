"""Reading a filter-list file: YAML validated into :class:`FilterLists`, errors as
``file:line: field: message`` (through :mod:`noisewall.yamlspec`, like the censor policy).

The format is in docs/wechat.md::

    keywords:
      - id: lawyer              # optional; defaults to the terms joined with "+"
        terms: [wang quanzhang, human rights lawyer]
        scopes: [group]         # one_to_one, group (default: both)
        active: {from: 2017-10-10, until: 2017-10-30}   # optional, one window or a list
    images:
      - id: banner
        file: banner.png        # relative to the list file; or phash: 16 hex digits
        distance: 6
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import imagehash
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from noisewall.messenger.wechat.filters import (
    ALWAYS,
    SCOPES,
    FilterLists,
    ImageRule,
    KeywordRule,
    Scope,
    Window,
    normalize,
)
from noisewall.messenger.wechat.images import ImageError, parse_hash, perceptual_hash
from noisewall.yamlspec import (
    Describe,
    LineTracker,
    SpecError,
    SpecPath,
    When,
    compose_spec,
    field_name,
    read_spec_text,
    validation_error,
)

#: Default Hamming distance (of 64 bits) within which an image counts as the listed one.
DEFAULT_DISTANCE = 6
#: Largest listed image file read.
MAX_IMAGE_FILE = 16 * 1024 * 1024


class FilterListError(SpecError):
    """An invalid filter list: which file, which line (1-based), which field, and what is wrong."""


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def _term(value: Any) -> Any:
    if isinstance(value, str) and not normalize(value).strip():
        raise ValueError("a term must not be empty")
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _WindowSpec(_Spec):
    start: When | None = Field(default=None, alias="from")
    until: When | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _WindowSpec:
        if self.start is None and self.until is None:
            raise ValueError("a window needs 'from', 'until' or both")
        if self.start is not None and self.until is not None and self.start >= self.until:
            raise ValueError("'from' must be before 'until'")
        return self

    def window(self) -> Window:
        return Window(self.start.timestamp() if self.start is not None else -math.inf,
                      self.until.timestamp() if self.until is not None else math.inf)


_Windows = Annotated[tuple[_WindowSpec, ...], BeforeValidator(_one_or_many)]
_Scopes = Annotated[tuple[Scope, ...], Field(min_length=1)]


class _KeywordSpec(_Spec):
    id: Annotated[str, Field(min_length=1)] | None = None
    terms: Annotated[tuple[Annotated[str, BeforeValidator(_term)], ...], Field(min_length=1)]
    scopes: _Scopes = SCOPES
    active: _Windows | None = None


class _ImageSpec(_Spec):
    id: Annotated[str, Field(min_length=1)] | None = None
    file: Annotated[str, Field(min_length=1)] | None = None
    phash: str | None = None
    distance: Annotated[int, Field(ge=0, le=64)] = DEFAULT_DISTANCE
    scopes: _Scopes = SCOPES
    active: _Windows | None = None

    @model_validator(mode="after")
    def _one_source(self) -> _ImageSpec:
        if (self.file is None) == (self.phash is None):
            raise ValueError("an image needs exactly one of 'file' or 'phash'")
        if self.phash is not None:
            parse_hash(self.phash)
        return self


class _ListsSpec(_Spec):
    description: str | None = None
    keywords: tuple[_KeywordSpec, ...] = ()
    images: tuple[_ImageSpec, ...] = ()


_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): _ListsSpec, ("keywords",): _KeywordSpec, ("images",): _ImageSpec,
    ("keywords", "active"): _WindowSpec, ("images", "active"): _WindowSpec,
}


def _describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
    path = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return path, path, "is required"
    if kind == "extra_forbidden":
        model = _MODELS.get(tuple(p for p in path[:-1] if isinstance(p, str)))
        if model is None:
            return path, path, "unknown key"
        known = ", ".join(info.alias or name for name, info in model.model_fields.items())
        return path, path, f"unknown key (expected one of: {known})"
    if kind == "literal_error":
        return path, path, f"unknown value {error.get('input')!r} (expected {ctx.get('expected')})"
    if kind == "value_error":
        return path, path, str(ctx.get("error", error["msg"]))
    if kind == "too_short":
        return path, path, "must not be empty"
    return path, path, str(error["msg"]).removeprefix("Input ").lower()


def located(at: SpecPath) -> Describe:
    """The lists' error wording for a schema whose data sits at ``at`` in its document."""

    def describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
        line_path, shown, message = _describe(error)
        return (*at, *line_path), (*at, *shown), message

    return describe


def parse_filter_lists(text: str, source: str = "<filters>",
                       base: Path | None = None) -> FilterLists:
    """Parse and validate filter-list YAML; image files are read relative to ``base``.

    Raises :class:`FilterListError` (and nothing else) on any invalid input.
    """
    node = compose_spec(text, source, FilterListError)
    if node is None:
        return FilterLists()
    return filter_lists_from_node(node, source, base)


def filter_lists_from_node(node: yaml.Node, source: str, base: Path | None = None,
                           at: SpecPath = ()) -> FilterLists:
    """Filter lists from an already composed YAML node (e.g. inside a lab scenario).

    ``at`` is where the node sits in its document: errors name fields from there.
    """
    tracker = LineTracker(source, FilterListError, "filter list")
    data = tracker.convert(node)
    if at:
        tracker.lines = {(*at, *path): line for path, line in tracker.lines.items()}
        tracker.lines[()] = tracker.lines[at]
    if not isinstance(data, dict):
        raise FilterListError(source, tracker.lines[()], None,
                              "a filter list is a mapping with 'keywords' and/or 'images'")
    try:
        spec = _ListsSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, tracker.lines, source, FilterListError,
                               located(at)) from None

    def error(path: SpecPath, message: str) -> FilterListError:
        path = (*at, *path)
        return FilterListError(source, tracker.lines.get(path, tracker.lines[()]),
                               field_name(path), message)

    keywords = []
    seen: set[str] = set()
    for index, keyword in enumerate(spec.keywords):
        terms = tuple(dict.fromkeys(normalize(t).strip() for t in keyword.terms))
        rule_id = keyword.id or "+".join(terms)
        if rule_id in seen:
            raise error(("keywords", index, "id"), f"duplicate id {rule_id!r}")
        seen.add(rule_id)
        keywords.append(KeywordRule(rule_id, terms, frozenset(keyword.scopes),
                                    _windows(keyword.active)))
    images = []
    for index, image in enumerate(spec.images):
        if image.file is not None:
            where: SpecPath = ("images", index, "file")
            phash = _hash_file((base or Path(".")) / image.file, functools.partial(error, where))
        else:
            assert image.phash is not None
            phash = parse_hash(image.phash)
        rule_id = image.id or (image.file or str(image.phash))
        if rule_id in seen:
            raise error(("images", index, "id"), f"duplicate id {rule_id!r}")
        seen.add(rule_id)
        images.append(ImageRule(rule_id, phash, image.distance, frozenset(image.scopes),
                                _windows(image.active)))
    return FilterLists(keywords, images)


def _windows(specs: tuple[_WindowSpec, ...] | None) -> tuple[Window, ...]:
    return ALWAYS if specs is None else tuple(spec.window() for spec in specs)


def _hash_file(path: Path, error: Callable[[str], FilterListError]) -> imagehash.ImageHash:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_IMAGE_FILE + 1)
    except OSError as exc:
        raise error(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_IMAGE_FILE:
        raise error(f"{str(path)!r} is larger than {MAX_IMAGE_FILE} bytes")
    try:
        return perceptual_hash(data)
    except ImageError as exc:
        raise error(f"{str(path)!r}: {exc}") from None


def load_filter_lists(path: Path | str) -> FilterLists:
    """Read and parse the filter-list file at ``path``; errors name the file as given."""
    return parse_filter_lists(read_spec_text(path, FilterListError), str(path),
                              Path(path).parent)
