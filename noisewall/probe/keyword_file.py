"""What the keyword probe sends, as validated YAML (``noisewall probe --keywords FILE``).

::

    control: "see you at the station at six"     # optional: the message with no sensitive terms
    candidates:                                  # a combination written out as a sentence
      - {id: lawyer, text: "Wang Quanzhang is a human rights lawyer", scope: one_to_one}
      - {id: congress, text: "the party congress delegates", scope: group}
    images:                                      # files relative to this file
      - {id: banner, file: banner.png, scope: group}

The same ``candidates`` and ``images`` entries make a lab scenario's
``wechat`` section (:mod:`noisewall.lab.wechat_plan`). Errors name the file,
line and field: ``kw.yaml:4: candidates[1].scope: ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from noisewall.messenger.wechat.images import ImageError, perceptual_hash
from noisewall.messenger.wechat.lists import located
from noisewall.probe.keyword import ImageCandidate, KeywordCandidate
from noisewall.yamlspec import (
    LineTracker,
    SpecError,
    SpecPath,
    compose_spec,
    field_name,
    read_spec_text,
    validation_error,
)

#: Largest image file the probe sends (the server refuses larger messages anyway).
MAX_IMAGE_FILE = 4 * 1024 * 1024


class KeywordFileError(SpecError):
    """An invalid candidates file: which file, line and field, and what is wrong."""


class _FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    control: str | None = Field(default=None, min_length=1)
    candidates: tuple[KeywordCandidate, ...] = ()
    images: tuple[ImageCandidate, ...] = ()


@dataclass(frozen=True)
class KeywordCandidates:
    """The candidates (and images, files resolved) the keyword probe tests, and its control."""

    candidates: tuple[KeywordCandidate, ...]
    images: tuple[ImageCandidate, ...]
    control: str | None = None


def checked_candidates(candidates: tuple[KeywordCandidate, ...],
                       images: tuple[ImageCandidate, ...], *, base: Path,
                       lines: Mapping[SpecPath, int], source: str, error: type[SpecError],
                       at: SpecPath = ()) -> tuple[ImageCandidate, ...]:
    """Check ids are unique and each image file is a readable image; the images, paths resolved.

    Raises ``error`` naming the file, line and field of the first problem.
    """
    seen: set[str] = set()
    items = [("candidates", i, c.id) for i, c in enumerate(candidates)]
    items += [("images", i, image.id) for i, image in enumerate(images)]
    for section, index, item_id in items:
        if item_id in seen:
            path = (*at, section, index, "id")
            raise error(source, lines.get(path), field_name(path),
                        f"duplicate candidate {item_id!r}")
        seen.add(item_id)
    resolved = []
    for index, image in enumerate(images):
        path = (*at, "images", index, "file")
        file = base / image.file
        try:
            with file.open("rb") as handle:
                data = handle.read(MAX_IMAGE_FILE + 1)
        except OSError as exc:
            raise error(source, lines.get(path), field_name(path),
                        f"cannot read {str(file)!r}: {exc.strerror or exc}") from None
        if len(data) > MAX_IMAGE_FILE:
            raise error(source, lines.get(path), field_name(path),
                        f"{str(file)!r} is larger than {MAX_IMAGE_FILE} bytes")
        try:  # the server refuses what it cannot decode: every round would fail
            perceptual_hash(data)
        except ImageError as exc:
            raise error(source, lines.get(path), field_name(path),
                        f"{str(file)!r}: {exc}") from None
        resolved.append(image.model_copy(update={"file": file}))
    return tuple(resolved)


def parse_keyword_candidates(text: str, source: str = "<keywords>",
                             base: Path | None = None) -> KeywordCandidates:
    """Parse and validate a candidates file's text; image files are relative to ``base``."""
    node = compose_spec(text, source, KeywordFileError)
    if node is None:
        raise KeywordFileError(source, 1, None, "empty: list 'candidates' and/or 'images'")
    tracker = LineTracker(source, KeywordFileError, "keyword candidates")
    data = tracker.convert(node)
    if not isinstance(data, dict):
        raise KeywordFileError(source, tracker.lines[()], None,
                               "a mapping with 'candidates' and/or 'images'")
    try:
        spec = _FileSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, tracker.lines, source, KeywordFileError,
                               located(())) from None
    if not spec.candidates and not spec.images:
        raise KeywordFileError(source, tracker.lines[()], None,
                               "nothing to test: list 'candidates' and/or 'images'")
    images = checked_candidates(spec.candidates, spec.images, base=base or Path("."),
                                lines=tracker.lines, source=source, error=KeywordFileError)
    return KeywordCandidates(spec.candidates, images, spec.control)


def load_keyword_candidates(path: Path | str) -> KeywordCandidates:
    """Read and parse the candidates file at ``path``; errors name the file as given."""
    return parse_keyword_candidates(read_spec_text(path, KeywordFileError), str(path),
                                    Path(path).parent)
