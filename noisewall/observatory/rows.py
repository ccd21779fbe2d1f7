"""What ingest makes of a measurement line: its feature rows, or the reason it is refused."""

from __future__ import annotations

from dataclasses import dataclass

from noisewall.errors import InputError


class MeasurementError(InputError):
    """A measurement line that cannot be used: bad JSON, wrong types, a bad verdict."""


class UnsupportedTest(MeasurementError):
    """A well-formed measurement of a test the observatory does not analyse (skipped, counted)."""

    def __init__(self, test_name: str) -> None:
        super().__init__(f"test_name {test_name!r} is not analysed")
        self.test_name = test_name


@dataclass(frozen=True, slots=True)
class FeatureRow:
    """One feature's outcome in one measurement: the detector's unit of data."""

    feature: str
    ok: bool
    failure: str | None
    throughput_kbps: float | None
