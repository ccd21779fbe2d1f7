"""Keyword measurements in the store: their checks at ingest, and ``filtered`` events from them.

``noisewall_keyword_filtering`` measurements (the keyword probe's,
:mod:`noisewall.records.keyword`) are stored whole in the ``measurements``
table like every other, but give no rows to ``results``: their unit is a
candidate message per round, read back by :func:`stored_filtered_events`
and turned into episodes by :mod:`.filtered`. The engine's check
(:data:`KEYWORD_OK_SQL`) and the parser's (:func:`keyword_rows`) accept the
same lines, as for the other tests (a test keeps them in agreement).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from noisewall.observatory.engine import sql_string, sql_strings
from noisewall.observatory.filtered import FilteredEvent, filtered_events
from noisewall.observatory.rows import FeatureRow, MeasurementError
from noisewall.records.keyword import SCOPES, TEST_NAME, KeywordTestKeys

__all__ = ["KEYWORD_OK_SQL", "TEST_NAME", "keyword_rows", "stored_filtered_events"]


def _outcomes_ok(member: str) -> str:
    """SQL: ``tk[member]`` is absent, or an object of {scope, arrived} objects."""
    value = f"tk[{sql_string(member)}]"
    pairs = f"JSONExtractKeysAndValuesRaw({value})"
    outcome = ("JSONType(kv.2) = 'Object' AND JSONType(kv.2, 'scope') = 'String' "
               f"AND JSONExtractString(kv.2, 'scope') IN {sql_strings(SCOPES)} "
               "AND JSONHas(kv.2, 'arrived') AND JSONType(kv.2, 'arrived') IN ('Bool', 'Null')")
    return (f"(NOT mapContains(tk, {sql_string(member)}) OR "
            f"JSONType({value}) = 'Object' AND arrayAll(kv -> {outcome}, {pairs}))")


#: SQL over the parsed line's ``top`` and ``tk`` maps: a keyword measurement :func:`keyword_rows`
#: accepts.
KEYWORD_OK_SQL = (
    f"(test_name = {sql_string(TEST_NAME)} AND JSONType(top['id']) = 'String' "
    "AND mapContains(tk, 'region') AND JSONType(tk['region']) = 'String' "
    "AND mapContains(tk, 'failure') AND JSONType(tk['failure']) IN ('String', 'Null') "
    "AND mapContains(tk, 'control') AND JSONType(tk['control']) = 'Object' "
    f"AND arrayAll(kv -> kv.1 IN {sql_strings(SCOPES)} AND JSONType(kv.2) = 'Bool', "
    "JSONExtractKeysAndValuesRaw(tk['control'])) "
    f"AND {_outcomes_ok('combinations')} AND {_outcomes_ok('images')})"
)


def keyword_rows(keys: Mapping[str, Any]) -> tuple[FeatureRow, ...]:
    """Validate a keyword measurement's ``test_keys``; it has no result rows (see module doc)."""
    try:
        KeywordTestKeys.model_validate(keys, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in ("test_keys", *first["loc"]))
        raise MeasurementError(f"{where}: {first['msg']}") from None
    return ()


class KeywordSource(Protocol):
    """A store that gives back the measurements of one test."""

    def raw_measurements_of(self, test_name: str, *, since: float | None = None,
                            until: float | None = None) -> list[bytes]: ...


def stored_filtered_events(store: KeywordSource, *, since: float | None = None,
                           until: float | None = None) -> list[FilteredEvent]:
    """Every filtered episode in the store's keyword measurements within ``[since, until)``."""
    return filtered_events(json.loads(raw) for raw in store.raw_measurements_of(
        TEST_NAME, since=since, until=until))
