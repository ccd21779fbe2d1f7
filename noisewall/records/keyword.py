"""The keyword probe's measurement: OONI's base format with ``noisewall_keyword_filtering`` keys.

The probe writes it (:mod:`noisewall.probe.keyword`), the observatory reads it
(:mod:`noisewall.observatory.filtered`) with :class:`KeywordTestKeys`.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict

TEST_NAME = "noisewall_keyword_filtering"
TEST_VERSION = "0.1.0"

#: Where a message goes: one to one, or to a group chat.
Scope: TypeAlias = Literal["one_to_one", "group"]
SCOPES: tuple[Scope, ...] = ("one_to_one", "group")


class KeywordOutcome(BaseModel):
    """One candidate in one round: its scope, and whether it arrived (None: not measured)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    scope: Scope
    arrived: bool | None


class KeywordTestKeys(BaseModel):
    """``test_keys`` of a keyword measurement: the region, the controls, each candidate."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    region: str
    failure: str | None
    control: dict[Scope, bool]
    combinations: dict[str, KeywordOutcome] = {}
    images: dict[str, KeywordOutcome] = {}
