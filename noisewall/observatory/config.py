"""Detector parameters: a YAML file validated by pydantic, with embedded defaults.

Every field is documented in ``docs/observatory.md``; an empty file (or no
file) means the defaults below. Errors name file, line and field in the
wording of every spec file (:mod:`noisewall.yamlspec`), e.g.
``detector.yaml:3: cusum.mu1: must be at most 1``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from noisewall.yamlspec import (
    LineTracker,
    SpecError,
    SpecPath,
    compose_spec,
    model_keys,
    read_spec_text,
    schema_message,
    validation_error,
)


class ConfigError(SpecError):
    """A detector configuration file that is unreadable or invalid: file, line, field, why."""


_Frozen = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class CusumConfig(BaseModel):
    """Two-sided CUSUM on the per-round failure (or slow-transfer) indicator, as OONI's."""

    model_config = _Frozen
    mu0: float = Field(default=0.0, ge=0, lt=1)
    """Expected failure rate when fine."""
    mu1: float = Field(default=0.7, gt=0, le=1)
    """Expected failure rate when blocked."""
    edd_rounds: float = Field(default=5.0, gt=0)
    """Expected detection delay of an onset, in probe rounds."""
    end_edd_rounds: float = Field(default=10.0, gt=0)
    """The same for an episode's end (longer: a flaky feature's lucky streak is no recovery)."""
    refine_lookback_rounds: int = Field(default=20, ge=0)
    """How far before an alarm's excursion the onset / end may be moved back."""
    gap_rounds: float = Field(default=24.0, gt=1)
    """A gap longer than this many probe intervals decays the sums."""
    gap_half_life_rounds: float = Field(default=48.0, gt=0)
    """Half-life of that decay, in probe intervals."""

    @model_validator(mode="after")
    def _ordered(self) -> CusumConfig:
        if self.mu1 <= self.mu0:
            raise ValueError("mu1 must be above mu0")
        return self

    @property
    def threshold(self) -> float:
        """h = edd * v / 2 with v = mu1 - mu0 (OONI's rule), for onsets."""
        return self.edd_rounds * (self.mu1 - self.mu0) / 2

    @property
    def end_threshold(self) -> float:
        """h for ends, from ``end_edd_rounds``."""
        return self.end_edd_rounds * (self.mu1 - self.mu0) / 2


class ClassifyConfig(BaseModel):
    """How an episode of failures is named and scored."""

    model_config = _Frozen
    blocked_max_success: float = Field(default=0.1, ge=0, lt=1)
    """An episode with at most this success fraction is 'blocked', above it 'intermittent'."""
    split_penalty: float = Field(default=8.0, ge=0)
    """Log-likelihood gain needed to split an episode into a blocked and an intermittent part."""
    min_segment_rounds: int = Field(default=5, ge=1)
    """Shortest part such a split may leave."""
    baseline_failure_floor: float = Field(default=0.01, gt=0, lt=0.5)
    """Lowest failure rate assumed for fine rounds (scores and onset dating)."""
    confidence_scale: float = Field(default=4.0, gt=0)
    """Confidence = 1 - exp(-LLR / scale)."""


class ThrottleConfig(BaseModel):
    """When a working transfer counts as throttled."""

    model_config = _Frozen
    drop_factor: float = Field(default=5.0, gt=1)
    """A round is slow at this many times below the baseline (and below the control path)."""
    baseline_rounds: int = Field(default=20, ge=1)
    """The baseline is the median throughput of this many latest normal rounds."""
    min_baseline_rounds: int = Field(default=5, ge=1)
    """Rounds needed before the own baseline is trusted."""
    plateau_max_cv: float = Field(default=0.35, gt=0)
    """Coefficient of variation of a policer's plateau; above it, congestion."""
    control_vantage: str = Field(default="control", min_length=1)
    """The uncensored path's vantage label."""
    control_window_rounds: float = Field(default=0.5, gt=0)
    """A control measurement counts for a round within this many probe intervals."""


class DetectorConfig(BaseModel):
    """All detector parameters."""

    model_config = _Frozen
    cusum: CusumConfig = Field(default_factory=CusumConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    throttle: ThrottleConfig = Field(default_factory=ThrottleConfig)


_SECTIONS: dict[SpecPath, type[BaseModel]] = {
    (): DetectorConfig,
    ("cusum",): CusumConfig,
    ("classify",): ClassifyConfig,
    ("throttle",): ThrottleConfig,
}


def _describe(error: ErrorDetails) -> tuple[SpecPath, SpecPath, str]:
    path = tuple(error["loc"])
    section = _SECTIONS.get(path[:-1])
    return path, path, schema_message(error, model_keys(section) if section else None)


def load_config(path: str | Path | None) -> DetectorConfig:
    """The configuration in ``path`` (YAML), or the defaults when ``path`` is None."""
    if path is None:
        return DetectorConfig()
    source = str(path)
    node = compose_spec(read_spec_text(path, ConfigError), source, ConfigError)
    if node is None:
        return DetectorConfig()
    tracker = LineTracker(source, ConfigError, "configuration")
    data = tracker.convert(node)
    if not isinstance(data, dict):
        raise ConfigError(source, tracker.lines[()], None,
                          "a detector configuration is a mapping (see docs/observatory.md)")
    try:
        return DetectorConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, tracker.lines, source, ConfigError, _describe) from None
