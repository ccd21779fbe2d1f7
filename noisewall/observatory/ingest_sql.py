"""Measurement lines parsed and checked in the engine: the SQL, made from the record's schema.

Two paths. The fast path (:func:`fast_select`, at the end of this module) reads a
``noisewall_messaging`` line with one typed parse and takes it only when it can be sure
the full checks would accept it and read the same values; every other line goes to the
full checks (:func:`parsed_select`), which decide and explain.

The full checks are written out from :class:`noisewall.records.measurement.FeatureResult`
(field by field: type, null allowed, default, lower bound) and from
:data:`.ooni_im.IM_TESTS`, so the engine accepts exactly what
:func:`.measurement.parse_line` accepts; a line the engine refuses is handed
to that parser for its precise message. A test keeps the two in agreement.

The field-by-field check of ``test_keys.features`` costs about 190 small JSON
parses a line, so it runs only where a cheaper one cannot vouch for the line:
one regular expression over the features' compact text, made from the same
model, that matches only what the model accepts (plain numbers in range,
strings without ``\\u`` escapes, known keys). Everything else (an escape, an
unknown key, a negative or huge number) falls through to the full check.

Each line becomes one row of ``kind`` ``ok`` (stored), ``skip`` (a test not
analysed) or ``error``, with the measurement's series key and its id (the
measurement's own, or ``ooni-`` and the content digest for OONI data, whose
collectors clear ids).
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge
from pydantic.fields import FieldInfo

from noisewall.observatory.engine import sql_string, sql_strings
from noisewall.observatory.keyword_store import KEYWORD_OK_SQL
from noisewall.observatory.keyword_store import TEST_NAME as KEYWORD_TEST
from noisewall.observatory.measurement import DEFAULT_VANTAGE, OONI_VANTAGE, UNKNOWN_FAILURE
from noisewall.observatory.ooni_im import IM_TESTS
from noisewall.records.measurement import TEST_NAME, FeatureResult
from noisewall.records.names import FEATURES

_NUMBER = "('Int64', 'UInt64', 'Double')"
_INTEGER = "('Int64', 'UInt64')"


def _members_of(raw: str) -> str:
    """SQL: the members of the JSON object ``raw`` as a map of name to raw JSON (one parse)."""
    pairs = f"JSONExtractKeysAndValuesRaw({raw})"
    return (f"mapFromArrays(arrayMap(member -> member.1, {pairs}), "
            f"arrayMap(member -> member.2, {pairs}))")


def _field_type(info: FieldInfo) -> tuple[Any, bool, list[Any]]:
    """A model field's type without ``None``: (type, whether None is allowed, its bounds)."""
    args = get_args(info.annotation)
    optional = (get_origin(info.annotation) in (Union, types.UnionType)
                and type(None) in args)
    base: Any = next(a for a in args if a is not type(None)) if optional else info.annotation
    metadata = list(info.metadata)
    if get_origin(base) is Annotated:  # Optional[Annotated[...]]: the bounds sit inside
        base, *extras = get_args(base)
        for extra in extras:
            metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
    return base, optional, metadata


def _field_check(value: str, name: str, info: FieldInfo) -> str:
    """SQL: member ``name`` of the JSON object ``value`` is what the model's field accepts."""
    key = sql_string(name)
    base, optional, metadata = _field_type(info)
    json_type = f"JSONType({value}, {key})"
    if get_origin(base) is Literal:
        check = (f"{json_type} = 'String' AND JSONExtractString({value}, {key}) IN "
                 f"({', '.join(sql_string(v) for v in get_args(base))})")
    elif base is str:
        check = f"{json_type} = 'String'"
    elif base is int:
        check = f"{json_type} IN {_INTEGER}"
    elif base is float:
        check = f"{json_type} IN {_NUMBER}"
    else:
        raise TypeError(f"no SQL check for {name}: {base!r}")
    for bound in metadata:
        if isinstance(bound, Ge):
            check += f" AND JSONExtractFloat({value}, {key}) >= {bound.ge}"
    alternatives = [f"({check})"]
    if optional:
        alternatives.append(f"{json_type} = 'Null'")
    if not info.is_required():
        alternatives.append(f"NOT JSONHas({value}, {key})")
    return "(" + " OR ".join(alternatives) + ")"


_JSON_STRING = r'"(?:[^"\\]|\\["\\/bfnrt])*"'
#: Digits that stay below 2**63 (an int) and a finite double (a float): all the model accepts.
_NATURAL = "(?:0|[1-9][0-9]{0,17})"
_NON_NEGATIVE = r"(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,17})?(?:[eE][+-]?[0-9]{1,2})?"


def _field_pattern(name: str, info: FieldInfo) -> str | None:
    """Regex for ``"name":value`` where value is one the field surely accepts, or None."""
    base, optional, metadata = _field_type(info)
    non_negative = any(isinstance(b, Ge) and b.ge == 0 for b in metadata)
    if get_origin(base) is Literal:
        value = '"(?:' + "|".join(re.escape(v) for v in get_args(base)) + ')"'
    elif base is str:
        value = _JSON_STRING
    elif base is int and non_negative:
        value = _NATURAL
    elif base is float and non_negative:
        value = _NON_NEGATIVE
    else:
        return None  # no shortcut for this field: the full check decides
    if optional:
        value = f"(?:null|{value})"
    return f'"{re.escape(name)}":{value}'


def features_pattern() -> str | None:
    """Regex for the compact text of a ``features`` object the model surely accepts.

    None when some field has no shortcut (then every line takes the full check).
    Fields may come in any order, any subset (all have defaults), repeated.
    """
    fields = [(name, info) for name, info in FeatureResult.model_fields.items()]
    patterns = [_field_pattern(name, info) for name, info in fields]
    if any(p is None for p in patterns) or any(info.is_required() for _, info in fields):
        return None
    field = "(?:" + "|".join(p for p in patterns if p is not None) + ")"
    feature = r"\{(?:" + field + "(?:," + field + r")*)?\}"
    name = '"(?:' + "|".join(re.escape(f) for f in FEATURES) + ')"'
    return rf"^\{{{name}:{feature}(?:,{name}:{feature})*\}}$"


def _feature_check(value: str) -> str:
    checks = [_field_check(value, name, info) for name, info in FeatureResult.model_fields.items()]
    return f"(JSONType({value}) = 'Object' AND " + " AND ".join(checks) + ")"


_FEATURES = "JSONExtractKeysAndValuesRaw(tk['features'])"
_FULL_FEATURES_OK = (
    f"JSONType(tk['features']) = 'Object' AND length({_FEATURES}) > 0 "
    f"AND arrayAll(kv -> kv.1 IN {sql_strings(FEATURES)} AND {_feature_check('kv.2')}, "
    f"{_FEATURES})")
_SHORTCUT = features_pattern()
# ``OR`` is evaluated short-circuit: the full check runs only where the pattern did not vouch.
_FEATURES_OK = (_FULL_FEATURES_OK if _SHORTCUT is None else
                f"(match(tk['features'], {sql_string(_SHORTCUT)}) OR {_FULL_FEATURES_OK})")
_NOISEWALL_OK = f"{_FEATURES_OK} AND JSONType(top['id']) = 'String'"


def _verdicts() -> list[tuple[str, str, str, str, str]]:
    """(test, feature, status key, blocking key, failure key) with '' for none."""
    return [(test, v.feature, v.status or "", v.blocking or "", v.failure or "")
            for test, verdicts in IM_TESTS.items() for v in verdicts]


_VERDICT_KEYS = sorted({key for verdicts in IM_TESTS.values() for v in verdicts
                        for key in (v.status, v.blocking, v.failure) if key is not None})


def _im_ok() -> str:
    per_test = []
    for test, verdicts in IM_TESTS.items():
        checks = []
        for v in verdicts:
            if v.status is not None:
                key = sql_string(v.status)
                checks.append(f"(JSONType(tk[{key}]) = 'Null' OR "
                              f"JSONExtractString(tk[{key}]) IN ('ok', 'blocked') "
                              f"AND JSONType(tk[{key}]) = 'String')")
            if v.blocking is not None:
                checks.append(f"JSONType(tk[{sql_string(v.blocking)}]) IN ('Null', 'Bool')")
            if v.failure is not None:
                key = sql_string(v.failure)
                checks.append(f"(JSONType(tk[{key}]) IN ('Null', 'String') OR "
                              f"JSONType(tk[{key}]) = 'Bool' AND NOT JSONExtractBool(tk[{key}]))")
        per_test.append(f"test_name = {sql_string(test)} AND " + " AND ".join(checks))
    return "(" + " OR ".join(f"({c})" for c in per_test) + ")"


#: OONI's time, ``YYYY-MM-DD HH:MM:SS``, as a ClickHouse string literal of a regex.
_TIME = sql_string("^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$")
_BASE_OK = (
    "JSONType(top['measurement_start_time']) = 'String' "
    f"AND match(start_text, {_TIME}) "
    "AND start IS NOT NULL "
    "AND JSONType(top['probe_asn']) = 'String' AND JSONExtractString(top['probe_asn']) != '' "
    "AND JSONType(top['probe_cc']) = 'String' "
    "AND JSONType(top['probe_network_name']) IN ('String', 'Null') "
    "AND (JSONType(top['id']) = 'Null' OR JSONType(top['id']) = 'String' "
    "AND length(JSONExtractString(top['id'])) BETWEEN 1 AND 200) "
    "AND JSONType(top['annotations']) IN ('Object', 'Null') "
    "AND JSONType(top['test_keys']) = 'Object'"
)

ANALYSED = (TEST_NAME, KEYWORD_TEST, *IM_TESTS)


def parsed_select(batch: str, source: str) -> str:
    """SQL: every line of ``batch`` (rows ``n, data``) read, checked and keyed.

    Each line is parsed once into a map of its members, and ``test_keys``
    once into another (``top``, ``tk``): every check reads those small values.
    """
    vantage = "JSONExtractString(top['annotations'], 'vantage')"
    round_type = "JSONType(top['annotations'], 'round')"
    round_text = "JSONExtractString(top['annotations'], 'round')"
    # An integer or a string of one (as :func:`.measurement._round`); beyond 64 bits the
    # engine's parser reports an integer as a string, so both read alike and are refused.
    round_digits = f"{round_type} = 'String' AND match({round_text}, '^-?[0-9]+$')"
    round_too_big = (f"({round_type} = 'UInt64' OR {round_digits} "
                     f"AND toInt64OrNull({round_text}) IS NULL)")
    network = "JSONExtractString(top['probe_network_name'])"
    return f"""
SELECT n, data, {sql_string(source)} AS source, tk['features'] AS features,
    mapFilter((name, value) -> name IN {sql_strings(_VERDICT_KEYS)}, tk) AS verdicts,
    if(is_object AND JSONType(top['test_name']) = 'String',
       JSONExtractString(top['test_name']), '') AS test_name,
    JSONExtractString(top['measurement_start_time']) AS start_text,
    parseDateTimeOrNull(start_text, '%Y-%m-%d %H:%i:%s', 'UTC') AS start,
    multiIf(NOT is_object OR JSONType(top['test_name']) != 'String', 'error',
            test_name NOT IN {sql_strings(ANALYSED)}, 'skip',
            {_BASE_OK} AND NOT {round_too_big}
            AND (test_name = {sql_string(TEST_NAME)} AND {_NOISEWALL_OK}
                 OR {_im_ok()} OR {KEYWORD_OK_SQL}), 'ok',
            'error') AS kind,
    sipHash128(data) AS digest,
    if(JSONType(top['id']) = 'String', JSONExtractString(top['id']),
       concat('ooni-', lower(hex(digest)))) AS id,
    toFloat64(toUnixTimestamp(start)) AS t,
    if({network} != '', {network}, JSONExtractString(top['probe_asn'])) AS network,
    if({vantage} != '', {vantage},
       if(test_name IN {sql_strings((TEST_NAME, KEYWORD_TEST))}, {sql_string(DEFAULT_VANTAGE)},
          {sql_string(OONI_VANTAGE)})) AS vantage,
    multiIf({round_type} = 'Int64', JSONExtract(top['annotations'], 'round', 'Nullable(Int64)'),
            {round_digits}, toInt64OrNull({round_text}),
            NULL) AS round
FROM (SELECT n, data, isValidUTF8(data) AND isValidJSON(data) AND JSONType(data) = 'Object'
             AS is_object,
             if(is_object, {_members_of('data')}, map()) AS top,
             if(is_object, {_members_of("top['test_keys']")}, map()) AS tk
      FROM {batch})"""


def results_select(parsed: str, accepted: str) -> str:
    """SQL: the feature rows of the accepted lines of ``parsed``."""
    # The line is valid here, so one typed parse of the features reads every value.
    typed = ("JSONExtractKeysAndValues(features, 'Tuple(status Nullable(String), "
             "failure Nullable(String), throughput_kbps Nullable(Float64))')")
    ok = "ifNull(tupleElement(kv, 2).status, 'ok') = 'ok'"
    noisewall = f"""
SELECT network, vantage, tupleElement(kv, 1) AS feature, t, id AS measurement,
    toUInt8({ok}) AS ok,
    if({ok}, NULL, if(ifNull(tupleElement(kv, 2).failure, '') != '',
                      tupleElement(kv, 2).failure, {sql_string(UNKNOWN_FAILURE)})) AS failure,
    if({ok}, tupleElement(kv, 2).throughput_kbps, NULL) AS kbps
FROM {parsed} ARRAY JOIN {typed} AS kv
WHERE n IN {accepted} AND test_name = {sql_string(TEST_NAME)}"""
    verdicts = ", ".join(
        "(" + ", ".join(sql_string(part) for part in verdict) + ")" for verdict in _verdicts())
    status = "JSONExtractString(verdicts[tupleElement(v, 3)])"
    blocking = "JSONExtractBool(verdicts[tupleElement(v, 4)])"
    failure = "JSONExtractString(verdicts[tupleElement(v, 5)])"
    present = ("JSONType(verdicts[if(tupleElement(v, 3) != '', tupleElement(v, 3), "
               "tupleElement(v, 4))]) != 'Null'")
    im = f"""
SELECT network, vantage, tupleElement(v, 2) AS feature, t, id AS measurement,
    toUInt8(if(tupleElement(v, 3) != '', {status} = 'ok', NOT {blocking})) AS ok,
    if(tupleElement(v, 5) != '' AND {failure} != '', {failure}, NULL) AS failure,
    CAST(NULL, 'Nullable(Float64)') AS kbps
FROM {parsed} ARRAY JOIN [{verdicts}] AS v
WHERE n IN {accepted} AND tupleElement(v, 1) = test_name AND {present}"""
    return f"{noisewall}\nUNION ALL{im}"


# The fast path ------------------------------------------------------------------------------
#
# One typed parse of the whole line (``JSONExtract`` into a Tuple generated from the
# record's models) reads every value the store needs. ClickHouse's typed extraction
# converts where Python's strict model refuses (a number read as a string gives its
# text, a string read as a number gives the number it spells, an array read as a Tuple
# fills it by position), so the fast path takes a line only under these conditions:
#
# * the line is a JSON object the engine's parser (simdjson) reads whole: invalid JSON or
#   UTF-8, a lone surrogate escape or NaN parse to nothing, and a line without an id is
#   refused;
# * a value read as a string is taken only when it cannot be the text of another JSON
#   type (a number, ``true``/``false``, an object or array);
# * a few Hyperscan patterns over the raw line (:data:`FAST_GUARDS`) send to the full
#   checks every line where a numeric key holds something other than a number or null,
#   an integer key a fraction or more than 18 digits, or an object key something other
#   than an object (and every line with an escape that could spell such a key);
# * everything else is checked on the typed values, field by field, from the model.
#
# A line the fast path refuses is not an error: it goes to :func:`parsed_select`, the
# exact checks, which decide and explain. So the fast path only has to be sound (never
# accept what the full checks refuse, and read what they read), never complete.

_WS = r"\s*"


def _is_number(info: FieldInfo) -> bool:
    base = _field_type(info)[0]
    return base is int or base is float


_NUMERIC_KEYS = [name for name, info in FeatureResult.model_fields.items() if _is_number(info)]
_INTEGER_KEYS = [name for name, info in FeatureResult.model_fields.items()
                 if _field_type(info)[0] is int]
#: Keys whose value the fast path reads as an object (a Tuple or a Map).
_OBJECT_KEYS = ["test_keys", "features", *FEATURES]


def _keys(names: list[str]) -> str:
    return '"(?:' + "|".join(re.escape(n) for n in names) + ')"' + _WS + ":" + _WS


#: Patterns (Hyperscan syntax) over the raw line; a line that matches any takes the full checks.
#: Each names the first characters a value must not start with (the line is valid JSON when
#: the fast path takes it, so a value starts with one of ``"{[tfn-`` or a digit); Hyperscan
#: in this engine mis-matches a negated class after ``\s*``, so the classes are positive.
FAST_GUARDS = (
    _keys(_NUMERIC_KEYS) + r'["{\[tf]',                  # a number field holding a non-number
    _keys([*_NUMERIC_KEYS, "round"]) + "-?[0-9]{19}",     # an integer beyond what is read exactly
    _keys([*_INTEGER_KEYS, "round"]) + "-?[0-9]+[.eE]",   # a fraction where an integer is read
    _keys(_OBJECT_KEYS) + r'["\[tfn0-9-]',                # an object field holding a non-object
    _keys(["annotations"]) + r'["\[tf0-9-]',             # annotations neither object nor null
    r"\\u00[0-7]",                                      # an escape that may spell an ASCII key
)


def _sql_type(info: FieldInfo) -> str:
    base = _field_type(info)[0]
    if base is int:
        return "Nullable(Int64)"
    if base is float:
        return "Nullable(Float64)"
    if base is str or get_origin(base) is Literal:
        return "Nullable(String)"
    raise TypeError(f"no typed read for {base!r}")


_FEATURE_TYPE = "Tuple(" + ", ".join(
    f"{name} {_sql_type(info)}" for name, info in FeatureResult.model_fields.items()) + ")"
#: The members of a ``noisewall_messaging`` line the store reads, with their engine types.
LINE_COLUMNS = (
    "id Nullable(String), measurement_start_time Nullable(String), "
    "probe_asn Nullable(String), probe_cc Nullable(String), probe_network_name Nullable(String), "
    "test_name Nullable(String), annotations Tuple(vantage Nullable(String), "
    f"round Nullable(String)), test_keys Tuple(features Map(String, {_FEATURE_TYPE}))")
_LINE_TYPE = f"Tuple({LINE_COLUMNS})"


def _string(value: str) -> str:
    """SQL: ``value`` (read as a string) was a JSON string, not the text of another type."""
    return f"NOT match({value}, '^(?:-?[0-9][-+.eE0-9]*$|true$|false$|[{{\\\\[])')"


def _fast_field_check(value: str, info: FieldInfo) -> str:
    """SQL: the typed ``value`` of a feature field is one the model accepts as it reads it.

    A field that may be absent but not null (a default that is not None) must be
    present here: absent and null read alike, so the full checks tell them apart.
    """
    base, optional, metadata = _field_type(info)
    if get_origin(base) is Literal:
        checks = [f"{value} IN ({', '.join(sql_string(v) for v in get_args(base))})"]
    elif base is str:
        checks = [_string(value)]
    elif base is float:
        checks = [f"isFinite({value})"]
    elif base is int:
        checks = []  # the guards let only integers through
    else:
        raise TypeError(f"no fast check for {base!r}")
    checks += [f"{value} >= {bound.ge}" for bound in metadata if isinstance(bound, Ge)]
    if optional:
        return "(" + " OR ".join([f"{value} IS NULL", " AND ".join(checks or ["1"])]) + ")"
    return "(" + " AND ".join([f"{value} IS NOT NULL", *checks]) + ")"


_FAST_FEATURE_OK = " AND ".join(
    _fast_field_check(f"tupleElement(f, {sql_string(name)})", info)
    for name, info in FeatureResult.model_fields.items())


def fast_select(batch: str) -> str:
    """SQL: every line of ``batch`` (rows ``n, data``) with ``fast``, whether the fast path
    vouches for it, and for those the stored columns and, feature by feature in parallel
    arrays, what the results read: ``feature_names``, ``feature_statuses``,
    ``feature_failures``, ``feature_throughputs``.
    """
    guards = "[" + ", ".join(sql_string(g) for g in FAST_GUARDS) + "]"
    start = "parseDateTimeOrNull(m.measurement_start_time, '%Y-%m-%d %H:%i:%s', 'UTC')"
    round_text = "m.annotations.round"
    round_digits = f"match({round_text}, '^-?[0-9]+$')"
    vantage = "m.annotations.vantage"
    return f"""
SELECT n, data, assumeNotNull(m.id) AS id,
    assumeNotNull(m.test_name) AS test_name,
    assumeNotNull(toFloat64(toUnixTimestamp({start}))) AS t,
    assumeNotNull(if(ifNull(m.probe_network_name, '') != '', m.probe_network_name, m.probe_asn))
        AS network,
    assumeNotNull(if(ifNull({vantage}, '') != '', {vantage}, {sql_string(DEFAULT_VANTAGE)}))
        AS vantage,
    if({round_digits}, toInt64OrNull({round_text}), NULL) AS round,
    mapKeys(features) AS feature_names,
    tupleElement(mapValues(features), 'status') AS feature_statuses,
    tupleElement(mapValues(features), 'failure') AS feature_failures,
    tupleElement(mapValues(features), 'throughput_kbps') AS feature_throughputs,
    ifNull(startsWith(data, '{{') AND NOT multiMatchAny(data, {guards})
    AND m.test_name = {sql_string(TEST_NAME)}
    AND m.id IS NOT NULL AND {_string('m.id')} AND length(m.id) BETWEEN 1 AND 200
    AND match(m.measurement_start_time, {_TIME}) AND {start} IS NOT NULL
    AND m.probe_asn != '' AND {_string('m.probe_asn')}
    AND m.probe_cc IS NOT NULL AND {_string('m.probe_cc')}
    AND (m.probe_network_name IS NULL OR {_string('m.probe_network_name')})
    AND ({vantage} IS NULL OR {_string(vantage)})
    AND NOT ({round_digits} AND toInt64OrNull({round_text}) IS NULL)
    AND length(features) > 0
    AND arrayAll(name -> name IN {sql_strings(FEATURES)}, mapKeys(features))
    AND arrayAll(f -> {_FAST_FEATURE_OK}, mapValues(features)), 0) AS fast
FROM (SELECT n, data, JSONExtract(data, {sql_string(_LINE_TYPE)}) AS m,
             m.test_keys.features AS features FROM {batch})"""


def fast_results_select(parsed: str, accepted: str | None = None) -> str:
    """SQL: the feature rows of the lines of ``parsed`` (a :func:`fast_select`) the fast path
    took, of those in ``accepted`` if given.
    """
    ok = "feature_status = 'ok'"
    return f"""
SELECT network, vantage, feature, t, id AS measurement, toUInt8({ok}) AS ok,
    if({ok}, NULL, if(ifNull(feature_failure, '') != '', feature_failure,
                      {sql_string(UNKNOWN_FAILURE)})) AS failure,
    if({ok}, feature_kbps, NULL) AS kbps
FROM {parsed} ARRAY JOIN feature_names AS feature, feature_statuses AS feature_status,
    feature_failures AS feature_failure, feature_throughputs AS feature_kbps
WHERE fast{"" if accepted is None else f" AND n IN {accepted}"}"""
