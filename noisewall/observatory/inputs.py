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
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Protocol, cast

from noisewall.errors import InputError
from noisewall.observatory.rows import MeasurementError

#: Largest line (or ``.json`` document) read; OONI's largest measurements are a few MiB.
MAX_LINE_BYTES = 32 * 1024 * 1024
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"
_SKIP_CHUNK = 1024 * 1024

Item = bytes | Mapping[str, Any] | MeasurementError


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
    try:
        if source == STDIN:
            yield from _lines(_maybe_gzip(sys.stdin.buffer))
            return
        with open(source, "rb") as raw:
            handle: _Reader = gzip.GzipFile(fileobj=raw) if source.endswith(".gz") else raw
            if not source.endswith(".gz") and raw.peek(2)[:2] == _GZIP_MAGIC:
                raise SourceError("gzip-compressed data under a name without .gz "
                                  "(rename it .jsonl.gz or .json.gz)")
            if source.endswith((".json", ".json.gz")):
                yield from _document(handle)
            else:
                yield from _lines(handle)
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


def _lines(handle: _Reader) -> Iterator[tuple[int, Item]]:
    number = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES:
            _skip_rest_of_line(handle, line)
            yield number, MeasurementError(f"line longer than {MAX_LINE_BYTES >> 20} MiB; skipped")
        else:
            yield number, line


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
