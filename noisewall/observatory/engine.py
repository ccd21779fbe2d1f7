"""The ClickHouse engine behind the store: chDB (ClickHouse in-process) on a folder.

Only what the store needs: run SQL, read a result as Arrow columns, and load
raw lines into a table (handed over in memory, as Arrow columns). chDB serves
one folder per process, and one process per folder: a second process (or a
second folder in this process) gets a :class:`EngineBusy` instead of chDB's
own wording.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import chdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from chdb import session
from chdb._exceptions import ChdbError

from noisewall.errors import InputError


class EngineError(InputError):
    """SQL the engine refused, or a folder it cannot use."""


class EngineBusy(EngineError):
    """The folder is open in another process (or this one has another folder open)."""


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what the engine's native code writes to fd 2 while it starts.

    A refused start (a store locked by another process) is also printed by
    ClickHouse itself; the caller reports it once, in a sentence.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Connection(Protocol):
    """What the engine uses of a chDB session or connection."""

    def query(self, sql: str, fmt: str = ..., /) -> Any: ...
    def close(self) -> None: ...


class ChdbEngine:
    """chDB on ``path`` (a folder, created if missing)."""

    _session: _Connection

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with _native_stderr_silenced():
                self._session = session.Session(str(path))
        except (RuntimeError, ChdbError) as exc:
            message = str(exc)
            if "EmbeddedServer" in message:
                raise EngineBusy(f"{path}: the store is open in another process (or this "
                                 "process has another store open); try again when it is "
                                 "done") from None
            raise EngineError(f"{path}: {message}") from None

    def another_connection(self) -> ChdbEngine:
        """A second connection to the same engine, for another thread: the two run queries
        at once (one connection runs one query at a time) and see the same tables.
        Close it before this one.
        """
        other = ChdbEngine.__new__(ChdbEngine)
        other.path = self.path
        other._session = chdb.connect(str(self.path))
        return other

    def close(self) -> None:
        """Close the session."""
        self._session.close()

    def execute(self, sql: str) -> None:
        """Run a statement."""
        try:
            self._session.query(sql)
        except ChdbError as exc:
            raise EngineError(str(exc)) from None

    def table(self, sql: str) -> pa.Table:
        """Run a query and return its result as an Arrow table."""
        try:
            result: Any = self._session.query(sql, "ArrowTable")
        except ChdbError as exc:
            raise EngineError(str(exc)) from None
        assert isinstance(result, pa.Table)
        return result

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a query and return its rows as tuples."""
        columns = [column.to_pylist() for column in self.table(sql).columns]
        return list(zip(*columns, strict=True))

    def load_lines(self, table: str, numbers: Sequence[int] | npt.NDArray[np.uint64],
                   lines: Sequence[bytes] | pa.ChunkedArray, *, strip: bool = False) -> None:
        """Insert rows ``(n, data)`` of ``table`` from ``numbers`` and ``lines``, in memory.

        The lines go over as Arrow columns that the engine reads in place (chDB's
        ``Python()`` table function): no file, no text to split again. ``strip``: the
        engine strips each line as ``bytes.strip()`` would and leaves out the blank ones.
        """
        data = lines if isinstance(lines, pa.ChunkedArray) else pa.chunked_array(
            [line_array(lines)], pa.large_binary())
        # ``Python(name)`` resolves ``name`` among the calling frames' locals: this one.
        noisewall_batch = pa.table({"n": pa.array(numbers, pa.uint64()),  # noqa: F841
                                    "data": data})
        value = f"trimBoth(data, {_WHITESPACE})" if strip else "data"
        kept = "WHERE line != ''" if strip else ""
        # Blocks of a few thousand rows: the statements that read the table use every core.
        self.execute(f"INSERT INTO {table} SELECT assumeNotNull(n), assumeNotNull({value}) AS line "
                     f"FROM Python(noisewall_batch) {kept} SETTINGS max_block_size = 4096")


#: What ``bytes.strip()`` strips (ASCII whitespace), as a ClickHouse string literal.
_WHITESPACE = r"' \t\n\r\x0b\x0c'"


def line_array(lines: Sequence[bytes]) -> pa.LargeBinaryArray:
    """``lines`` as one Arrow column over a single joined buffer (no object per line)."""
    ends = np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)))
    return block_array(b"".join(lines), np.concatenate(([0], ends)).astype(np.int64))


def block_array(data: bytes, offsets: npt.NDArray[np.int64]) -> pa.LargeBinaryArray:
    """The lines ``data[offsets[i]:offsets[i + 1]]`` as an Arrow column over ``data`` itself."""
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return _quote(text)


def sql_strings(values: Sequence[str]) -> str:
    """A ClickHouse array literal of strings."""
    return "[" + ", ".join(_quote(v) for v in values) + "]"
