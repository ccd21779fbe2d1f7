"""Where measurements come from: files, gzip, directories, stdin, each as numbered items.

Accepted (the forms OONI publishes and its API serves):

* ``.jsonl`` and ``.jsonl.gz``: one measurement per line;
* ``.json`` and ``.json.gz``: one JSON document, a measurement or a list of them;
* a directory: every such file below it, in name order;
* ``-``: JSON lines on standard input, gzip-compressed or not.

A file that cannot be read as such (gzip data under a plain name, a truncated
gzip stream, a system error) raises :class:`SourceError` once, naming the file;
the items yielded before it stand. A line longer than :data:`MAX_LINE_BYTES` is
skipped without being held in memory and yielded as a :class:`MeasurementError`.

JSON lines are read :data:`READ_BYTES` at a time and handed over as
:class:`LineBlock` s (:func:`read_blocks`): whole lines cut by NumPy, no
Python object per line. :func:`read_items` gives the same lines one by one.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from noisewall.errors import InputError
from noisewall.observatory.rows import MeasurementError

#: Largest line (or ``.json`` document) read; OONI's largest measurements are a few MiB.
MAX_LINE_BYTES = 32 * 1024 * 1024
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"
_SKIP_CHUNK = 1024 * 1024
#: Bytes read at a time from a file of JSON lines.
READ_BYTES = 8 * 1024 * 1024
#: The bytes ``bytes.strip()`` removes: a line of only these is blank.
_WHITESPACE = np.zeros(256, dtype=np.bool_)
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True

Item = bytes | Mapping[str, Any] | MeasurementError


@dataclass(frozen=True)
class LineBlock:
    """Whole lines as read, numbered from ``first``: line ``i`` of the block is
    ``data[offsets[i]:offsets[i + 1]]``, with its line end (the file's last line may
    have none) and any other whitespace around it.

    ``blank`` counts the lines that hold nothing but whitespace: no measurement,
    and not counted as read.
    """

    first: int
    data: bytes
    offsets: npt.NDArray[np.int64]
    blank: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """Each line with its number, as read."""
        bounds = self.offsets.tolist()
        for i in range(len(bounds) - 1):
            yield self.first + i, self.data[bounds[i]:bounds[i + 1]]


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def readline(self, size: int = -1, /) -> bytes: ...


class SourceError(InputError):
    """A file that cannot be read as measurements (the message says why, without the name)."""


def expand(paths: Iterable[str | Path]) -> Iterator[str]:
    """The files to read: each path as given, directories replaced by their measurement files."""
    for path in paths:
        if str(path) != STDIN and Path(path).is_dir():
            yield from sorted(str(p) for p in Path(path).rglob("*")
                              if p.is_file() and p.name.endswith(SUFFIXES))
        else:
            yield str(path)


def read_items(source: str) -> Iterator[tuple[int, Item]]:
    """Numbered items of one source: line numbers, or entry numbers in a ``.json`` list."""
    for number, item in read_blocks(source):
        if isinstance(item, LineBlock):
            yield from item.lines()
        else:
            yield number, item


def read_blocks(source: str) -> Iterator[tuple[int, Item | LineBlock]]:
    """As :func:`read_items`, but JSON lines come as :class:`LineBlock` s (numbered by
    their first line) and only the lines too long to read come one by one.
    """
    try:
        if source == STDIN:
            yield from _line_blocks(_maybe_gzip(sys.stdin.buffer))
            return
        with open(source, "rb") as raw:
            handle: _Reader = gzip.GzipFile(fileobj=raw) if source.endswith(".gz") else raw
            if not source.endswith(".gz") and raw.peek(2)[:2] == _GZIP_MAGIC:
                raise SourceError("gzip-compressed data under a name without .gz "
                                  "(rename it .jsonl.gz or .json.gz)")
            if source.endswith((".json", ".json.gz")):
                yield from _document(handle)
            else:
                yield from _line_blocks(handle)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SourceError(f"broken gzip stream ({exc})") from None
    except OSError as exc:
        raise SourceError(exc.strerror or str(exc)) from None


def _maybe_gzip(stream: IO[bytes]) -> _Reader:
    buffered = (stream if isinstance(stream, io.BufferedReader)
                else io.BufferedReader(cast(io.RawIOBase, stream)))
    if buffered.peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=buffered)
    return buffered


def _line_blocks(handle: _Reader) -> Iterator[tuple[int, LineBlock | MeasurementError]]:
    number = 1  # of the next line
    pending = b""  # a line begun and not ended yet
    while chunk := handle.read(READ_BYTES):
        data = pending + chunk if pending else chunk
        end = data.rfind(b"\n") + 1
        pending = data[end:]
        if end:
            ends = np.flatnonzero(np.frombuffer(data, np.uint8, end) == ord("\n")) + 1
            yield from _whole_lines(number, data, ends)
            number += len(ends)
        if len(pending) > MAX_LINE_BYTES:
            _skip_rest_of_line(handle, pending)
            yield number, _too_long()
            number += 1
            pending = b""
    if pending:  # the last line, without a line end
        yield from _whole_lines(number, pending, np.array([len(pending)]))


def _whole_lines(number: int, data: bytes, ends: npt.NDArray[np.intp]
                 ) -> Iterator[tuple[int, LineBlock | MeasurementError]]:
    """The lines of ``data`` that end at ``ends``, numbered from ``number``, as blocks;
    a line longer than :data:`MAX_LINE_BYTES` between them as an error.
    """
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    start = 0
    for long in np.flatnonzero(np.diff(offsets) > MAX_LINE_BYTES).tolist():
        if long > start:
            yield number + start, _block(number + start, data, offsets[start:long + 1])
        yield number + long, _too_long()
        start = long + 1
    if start < len(offsets) - 1:
        yield number + start, _block(number + start, data, offsets[start:])


def _block(first: int, data: bytes, offsets: npt.NDArray[np.int64]) -> LineBlock:
    starts = offsets[:-1]
    # Only a line that starts with whitespace can be blank: those few are looked at whole.
    maybe = np.flatnonzero(_WHITESPACE[np.frombuffer(data, np.uint8)[starts]]).tolist()
    blank = sum(1 for i in maybe if not data[offsets[i]:offsets[i + 1]].strip())
    return LineBlock(first, data, offsets, blank)


def _too_long() -> MeasurementError:
    return MeasurementError(f"line longer than {MAX_LINE_BYTES >> 20} MiB; skipped")


def _skip_rest_of_line(handle: _Reader, start: bytes) -> None:
    chunk = start
    while chunk and not chunk.endswith(b"\n"):
        chunk = handle.readline(_SKIP_CHUNK)


def _document(handle: _Reader) -> Iterator[tuple[int, Item]]:
    text = handle.read(MAX_LINE_BYTES + 1)
    if len(text) > MAX_LINE_BYTES:
        yield 1, MeasurementError(f"document longer than {MAX_LINE_BYTES >> 20} MiB; skipped")
        return
    try:
        document = json.loads(text)
    except UnicodeDecodeError as exc:
        yield 1, MeasurementError(f"not UTF-8: {exc.reason} at byte {exc.start}")
        return
    except (json.JSONDecodeError, RecursionError) as exc:
        yield 1, MeasurementError(f"bad JSON: {exc}")
        return
    entries = document if isinstance(document, list) else [document]
    for number, entry in enumerate(entries, 1):
        yield number, entry if isinstance(entry, dict) else MeasurementError(
            f"a measurement is a JSON object, not {type(entry).__name__}")
