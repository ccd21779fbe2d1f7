"""YAML spec files (policies, scenarios) -> plain data, with errors naming file:line:field.

A loader built on this module reads text with :func:`read_spec_text`,
composes it with :func:`compose_spec`, turns the node tree into plain
Python data with a :class:`LineTracker` (which records the line of every
field), validates that data with pydantic, and maps a
:class:`pydantic.ValidationError` back onto the file with
:func:`validation_error`. Every failure is one :class:`SpecError` subclass
chosen by the caller (``PolicyError``, ``ScenarioError``), e.g.
``policy.yaml:12: rules[1].action.rate_kbps: must be greater than 0``.

Field paths are tuples of keys and list indexes (:data:`SpecPath`), shown by
:func:`field_name` as ``rules[1].action``; indexes count from 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Generic, TypeAlias, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import ErrorDetails

from noisewall.errors import InputError

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "Describe",
    "LineTracker",
    "SpecError",
    "SpecPath",
    "When",
    "compose_spec",
    "field_name",
    "line_of",
    "model_keys",
    "parse_when",
    "read_spec_text",
    "schema_message",
    "validation_error",
]

#: A field's place in the data: mapping keys and list indexes, outermost first.
SpecPath: TypeAlias = tuple[str | int, ...]
#: Deepest nesting a :class:`LineTracker` accepts.
MAX_DEPTH = 64
#: Most YAML nodes a :class:`LineTracker` converts (aliases count each time they are used).
MAX_NODES = 200_000

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class SpecError(InputError):
    """An invalid spec file: which file, which line (1-based), which field, and what is wrong."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


E = TypeVar("E", bound=SpecError)


def field_name(path: SpecPath) -> str | None:
    """``("rules", 1, "action")`` -> ``"rules[1].action"``; ``None`` for the root."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or None


def line_of(lines: Mapping[SpecPath, int], path: SpecPath) -> int:
    """The line of ``path``, or of its nearest enclosing field that has one.

    ``lines`` must hold the root ``()``, as :meth:`LineTracker.convert` leaves it.
    """
    while path not in lines:
        path = path[:-1]
    return lines[path]


def parse_when(value: Any) -> Any:
    """ISO 8601 date / datetime (YAML timestamp or string) -> aware datetime (UTC if naive).

    A date means midnight UTC. A pydantic before-validator: raises
    :class:`ValueError` for anything else.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date or datetime") from None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), UTC)
    raise ValueError(f"{value!r} is not an ISO 8601 date or datetime")


#: A pydantic field type: a point in time written as in :func:`parse_when`.
When = Annotated[datetime, BeforeValidator(parse_when)]


class LineTracker(Generic[E]):
    """YAML node tree -> plain data (dicts, lists, scalars), remembering the line of every field.

    Only the YAML core schema's plain mappings and sequences are accepted; keys
    must be strings and unique; aliases are followed, but not recursive ones;
    nesting is bounded by :data:`MAX_DEPTH` and size by :data:`MAX_NODES`.
    Problems raise ``error`` (a :class:`SpecError` subclass) naming the node's
    line and field.
    """

    def __init__(self, source: str, error: type[E], what: str = "document") -> None:
        self.source = source
        self.error_type = error
        self.what = what
        #: Line (1-based) of each field converted so far.
        self.lines: dict[SpecPath, int] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._budget = MAX_NODES
        self._open: set[int] = set()

    def convert(self, node: yaml.Node, path: SpecPath = ()) -> Any:
        """The data of ``node`` (at ``path``); records its line and those of every field below."""
        self.lines[path] = node.start_mark.line + 1
        return self._convert(node, path, 0)

    def error(self, node: yaml.Node, path: SpecPath, message: str) -> E:
        """An error at ``node``'s line, naming ``path``."""
        return self.error_type(self.source, node.start_mark.line + 1, field_name(path), message)

    def _convert(self, node: yaml.Node, path: SpecPath, depth: int) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise self.error(node, path, f"{self.what} too large")
        if depth > MAX_DEPTH:
            raise self.error(node, path, "nested too deeply")
        if isinstance(node, yaml.ScalarNode):
            try:
                return self._constructor.construct_object(node, deep=True)
            except Exception as exc:  # a bad scalar: any constructor failure
                problem = getattr(exc, "problem", None) or str(exc)
                raise self.error(node, path, f"invalid value {node.value!r}: {problem}") from None
        if id(node) in self._open:
            raise self.error(node, path, "recursive alias")
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path, depth)
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path, depth)
            raise self.error(node, path, "unsupported YAML node")
        finally:
            self._open.discard(id(node))

    def _sequence(self, node: yaml.SequenceNode, path: SpecPath, depth: int) -> list[Any]:
        if node.tag != _SEQ_TAG:
            raise self.error(node, path, f"unsupported YAML tag {node.tag}")
        out = []
        for index, item in enumerate(node.value):
            here = (*path, index)
            self.lines[here] = item.start_mark.line + 1
            out.append(self._convert(item, here, depth + 1))
        return out

    def _mapping(self, node: yaml.MappingNode, path: SpecPath, depth: int) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            raise self.error(node, path, f"unsupported YAML tag {node.tag}")
        try:
            self._constructor.flatten_mapping(node)
        except yaml.YAMLError as exc:
            raise self.error(node, path, f"invalid merge: {getattr(exc, 'problem', exc)}") from None
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = None
            if isinstance(key_node, yaml.ScalarNode):
                key = self._convert(key_node, path, depth + 1)
            if not isinstance(key, str):
                raise self.error(key_node, path, "keys must be strings")
            here = (*path, key)
            if key in out:
                raise self.error(key_node, here, "duplicate key")
            self.lines[here] = key_node.start_mark.line + 1
            out[key] = self._convert(value_node, here, depth + 1)
        return out


def _yaml_error(exc: yaml.YAMLError, text: str, source: str, error: type[E]) -> E:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = exc.problem or "syntax error"
        if exc.context:
            message = f"{exc.context}: {message}"
        return error(source, line, None, f"invalid YAML: {message}")
    position = getattr(exc, "position", None)
    line = text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    reason = getattr(exc, "reason", None) or str(exc)
    return error(source, line, None, f"invalid YAML: {reason}")


def compose_spec(text: str, source: str, error: type[E]) -> yaml.Node | None:
    """The YAML node tree of ``text`` (``None`` if it holds no document).

    Raises ``error`` (and nothing else) if ``text`` is not one valid YAML
    document, with the line of the problem where YAML gives one.
    """
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source, error) from None
    except RecursionError:
        raise error(source, 1, None, "invalid YAML: nested too deeply") from None


def read_spec_text(path: Path | str, error: type[E]) -> str:
    """The UTF-8 text of the file at ``path``; ``error`` naming the path as given if unreadable."""
    source = str(path)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(source, None, None, f"not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise error(source, None, None, f"cannot read: {exc.strerror or exc}") from None


_MESSAGES = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "finite_number": "must be a finite number",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "int_parsing": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "datetime_type": "must be an ISO 8601 date or datetime",
}


def model_keys(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a mapping of ``model`` takes, as written in files (aliases such as ``from``)."""
    return tuple(info.alias or name for name, info in model.model_fields.items())


def _number(value: Any) -> Any:
    """``0.0`` -> ``0`` in messages."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def schema_message(error: ErrorDetails, known_keys: Sequence[str] | None = None) -> str:
    """The one wording of a schema error in a spec file: what follows ``file:line: field:``.

    ``known_keys``: the keys the enclosing mapping takes, listed for an unknown key.
    """
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return (f"unknown key (expected one of: {', '.join(known_keys)})" if known_keys
                else "unknown key")
    if kind == "literal_error":
        return f"unknown value {error.get('input')!r} (expected {ctx.get('expected')})"
    template = _MESSAGES.get(kind)
    if template is not None:
        try:
            return template.format(**{k: _number(v) for k, v in ctx.items()})
        except (KeyError, IndexError):
            pass
    return str(error["msg"]).removeprefix("Input ").lower()


#: Maps one pydantic error to (path whose line to report, field path shown, message).
Describe: TypeAlias = Callable[[ErrorDetails], tuple[SpecPath, SpecPath, str]]


def validation_error(
    exc: ValidationError,
    lines: Mapping[SpecPath, int],
    source: str,
    error: type[E],
    describe: Describe,
) -> E:
    """The first (by line) of ``exc``'s errors as an ``error``.

    ``describe`` turns each pydantic error into the data path whose line is
    reported (looked up with :func:`line_of`), the field path shown, and the
    message: the loader's wording for its own schema.
    """
    found = []
    for details in exc.errors():
        at, shown, message = describe(details)
        found.append(error(source, line_of(lines, at), field_name(shown), message))
    return min(found, key=lambda e: e.line or 0)
