"""What ingest reports and what the detector reads, whichever store holds the data."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from noisewall.errors import InputError

Floats = npt.NDArray[np.float64]
Flags = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.int32]


class StoreError(InputError):
    """The database file cannot be used as a measurement store."""


@dataclass(frozen=True, slots=True)
class LineError:
    """One rejected line: where it is and why."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


#: Rejected lines printed one by one before the rest are only counted.
ERRORS_SHOWN = 10


def _reason(message: str) -> str:
    """The kind of a rejection: its message up to the first detail (``not UTF-8``, ``bad JSON``)."""
    return re.split(r"[:('\"]", message, maxsplit=1)[0].strip()


@dataclass(frozen=True, slots=True)
class FileError:
    """A file that could not be read (to the end): which one and why."""

    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: cannot read: {self.message}"


@dataclass
class IngestReport:
    """What one ingest did: lines read, measurements stored, re-ingested ones, errors.

    ``errors`` holds the rejected lines, ``file_errors`` the files that could not be read
    (a file that fails part-way keeps the batches committed before the failure),
    ``skipped`` the measurements of tests the observatory does not analyse, per test name.
    """

    lines: int = 0
    stored: int = 0
    already_stored: int = 0
    errors: list[LineError] = field(default_factory=list)
    file_errors: list[FileError] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def error_lines(self, shown: int = ERRORS_SHOWN) -> list[str]:
        """The rejected lines for a terminal: the first ``shown`` one by one, the rest counted.

        A file of a million bad lines gives ``shown`` lines and one summary by
        reason, not a million lines.
        """
        lines = [str(error) for error in self.errors[:shown]]
        rest = self.errors[shown:]
        if rest:
            reasons = Counter(_reason(error.message) for error in rest)
            counted = ", ".join(f"{n:,} {reason}" for reason, n in reasons.most_common())
            lines.append(f"and {len(rest):,} more rejected lines: {counted}")
        return lines

    def skipped_lines(self) -> list[str]:
        """One line per skipped test name."""
        return [f"skipped {n} {name} measurement{'s' if n > 1 else ''} (not analysed)"
                for name, n in sorted(self.skipped.items())]

    def as_json(self) -> dict[str, object]:
        """The ``--json`` shape."""
        return {"lines": self.lines, "stored": self.stored,
                "already_stored": self.already_stored,
                "errors": [{"source": e.source, "line": e.line, "message": e.message}
                           for e in self.errors],
                "file_errors": [{"source": e.source, "message": e.message}
                                for e in self.file_errors],
                "skipped": dict(sorted(self.skipped.items()))}


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """A time series: (vantage network, vantage path, feature)."""

    network: str
    vantage: str
    feature: str


@dataclass(frozen=True, slots=True)
class SeriesRows:
    """One series' rows in time order, column by column (failures as OONI strings)."""

    key: SeriesKey
    times: list[float]
    ok: list[bool]
    failures: list[str | None]
    kbps: list[float | None]


@dataclass(frozen=True, slots=True, eq=False)
class SeriesColumns:
    """One series' rows in time order as NumPy columns: what the detectors read.

    ``failures`` holds an index into ``failure_names`` per row, -1 where the
    row has no failure string; ``kbps`` is NaN where the row has no throughput.
    """

    key: SeriesKey
    times: Floats
    ok: Flags
    failures: Codes
    failure_names: Sequence[str]
    kbps: Floats

    def __len__(self) -> int:
        return len(self.times)

    @classmethod
    def of(cls, rows: SeriesRows) -> SeriesColumns:
        """The columns of ``rows``."""
        names: dict[str, int] = {}
        codes = [-1 if f is None else names.setdefault(f, len(names)) for f in rows.failures]
        return cls(rows.key, np.asarray(rows.times, dtype=np.float64),
                   np.asarray(rows.ok, dtype=np.bool_), np.asarray(codes, dtype=np.int32),
                   tuple(names), np.asarray([np.nan if r is None else r for r in rows.kbps],
                                            dtype=np.float64))


def duplicate_error(measurement_id: str, digest: bytes, where: tuple[str, int],
                    first: tuple[bytes, str, int], sources: set[str]) -> LineError | None:
    """None when re-ingesting the same measurement (idempotent), else the line's error.

    ``first`` is where the id was first seen (digest, source, line), ``sources``
    the sources of this ingest: the same measurement twice within one ingest is
    an error, once more in a later ingest is not.
    """
    source, line = where
    first_digest, first_source, first_line = first
    seen = f"{first_source}:{first_line}"
    if first_digest != digest:
        return LineError(source, line, f"duplicate id {measurement_id!r} with different content "
                                       f"(first stored from {seen}); skipped")
    if (first_source, first_line) != (source, line) and first_source in sources:
        return LineError(source, line, f"duplicate id {measurement_id!r} (same measurement as "
                                       f"{seen}); skipped")
    return None


class SeriesSource(Protocol):
    """What the detector reads from a store: its series, a group at a time."""

    def series_groups(self, *, since: float | None = None,
                      until: float | None = None) -> Iterator[list[SeriesColumns]]:
        """Every series with rows in ``since <= t < until``, one group at a time.

        A group is the series of one (network, feature), every vantage: a
        series and its control path arrive together, and only one group (or a
        batch of small ones) needs to be in memory.
        """
