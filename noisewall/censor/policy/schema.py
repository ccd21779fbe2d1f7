"""The policy file's schema (pydantic): what each key may hold, as validated data."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)

from noisewall.censor.policy.actions import ACTION_KINDS, Transport
from noisewall.yamlspec import (
    When,
)


def _one_or_many(value: Any) -> Any:
    if value is None:
        raise ValueError("must not be empty")
    if isinstance(value, list):
        if not value:
            raise ValueError("must not be an empty list")
        return tuple(value)
    return (value,)


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_LABEL = re.compile(r"[a-z0-9][a-z0-9_.+-]*\Z")


def _label(value: str) -> str:
    label = value.strip().lower()
    if not _LABEL.match(label):
        raise ValueError(f"{value!r} is not a protocol label (e.g. tls, noisesocket, wa)")
    return label


def _pattern(value: str) -> str:
    if value.startswith("re:"):
        body = value[3:]
        if not body:
            raise ValueError("empty regular expression after 're:'")
        try:
            re.compile(body, re.IGNORECASE)
        except re.error as exc:
            where = f" at position {exc.pos}" if exc.pos is not None else ""
            raise ValueError(f"invalid regular expression {body!r}: {exc.msg}{where}") from None
        except (RecursionError, OverflowError, ValueError) as exc:
            raise ValueError(f"invalid regular expression {body!r}: {exc}") from None
        return value
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


_HOSTNAME = re.compile(r"[a-z0-9*?_\[\]!-]+(\.[a-z0-9*?_\[\]!-]+)*\.?\Z")


def _server(value: str) -> str:
    text = value.strip()
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text))
        except ValueError:
            pass
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"invalid CIDR {text!r}") from None
        raise ValueError(f"invalid CIDR {text!r}: host bits set (did you mean {loose}?)")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.lower()
    labels = name.rstrip(".").split(".")
    if not _HOSTNAME.match(name) or all(label.isdigit() for label in labels):
        raise ValueError(f"{value!r} is not an IP address, CIDR or host name")
    return name


def _port_number(text: str, original: Any) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"invalid port {original!r}: ports are 1..65535")
    return int(text)


def _port_entry(value: Any) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"invalid port {value!r}")
    if isinstance(value, int):
        return (_port_number(str(value), value),) * 2
    if isinstance(value, str):
        lo, sep, hi = value.strip().partition("-")
        first = _port_number(lo.strip(), value)
        last = _port_number(hi.strip(), value) if sep else first
        if last < first:
            raise ValueError(f"invalid port range {value!r}: {first} > {last}")
        return first, last
    raise ValueError(f"invalid port {value!r}: a number or a range like '5222-5223'")


_Str = Annotated[str, Field(min_length=1)]
_Labels = Annotated[
    tuple[Annotated[str, AfterValidator(_label)], ...], BeforeValidator(_one_or_many)
]
_PatternList = Annotated[
    tuple[Annotated[str, AfterValidator(_pattern)], ...], BeforeValidator(_one_or_many)
]
_Servers = Annotated[
    tuple[Annotated[str, AfterValidator(_server)], ...], BeforeValidator(_one_or_many)
]
_Ports = Annotated[
    tuple[Annotated[tuple[int, int], PlainValidator(_port_entry)], ...],
    BeforeValidator(_one_or_many),
]
_Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MatchSpec(_Spec):
    protocol: _Labels | None = None
    sni: _PatternList | None = None
    host: _PatternList | None = None
    server: _Servers | None = None
    port: _Ports | None = None
    ja3: _PatternList | None = None
    ja4: _PatternList | None = None
    fully_encrypted: bool | None = None
    transport: Transport | None = None
    query: _PatternList | None = None


class _AllowSpec(_Spec):
    kind: Literal["allow"]


class _ResetSpec(_Spec):
    kind: Literal["reset"]


class _DropSpec(_Spec):
    kind: Literal["drop"]


class DelaySpec(_Spec):
    kind: Literal["delay"]
    ms: _Positive


class ThrottleSpec(_Spec):
    kind: Literal["throttle"]
    rate_kbps: _Positive


class FlakySpec(_Spec):
    kind: Literal["flaky"]
    fail: _Fraction
    mode: Literal["fail", "stall"] = "fail"
    stall_after_bytes: Annotated[int, Field(ge=0)] | None = None


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address") from None


class DnsSpec(_Spec):
    kind: Literal["dns"]
    answer: Annotated[str, AfterValidator(_ipv4)]


def _action_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"kind": value.strip()}
    if isinstance(value, dict):
        return value
    raise ValueError(
        f"must be an action name ({', '.join(ACTION_KINDS)}) or a mapping with a 'kind'"
    )


_ActionSpec = Annotated[
    _AllowSpec | _ResetSpec | _DropSpec | DelaySpec | ThrottleSpec | FlakySpec | DnsSpec,
    Field(discriminator="kind"),
    BeforeValidator(_action_shorthand),
]
ACTION_SPECS: dict[str, type[_Spec]] = {
    "allow": _AllowSpec,
    "reset": _ResetSpec,
    "drop": _DropSpec,
    "delay": DelaySpec,
    "throttle": ThrottleSpec,
    "flaky": FlakySpec,
    "dns": DnsSpec,
}


class WindowSpec(_Spec):
    start: When | None = Field(default=None, alias="from")
    until: When | None = None

    @model_validator(mode="after")
    def _ordered(self) -> WindowSpec:
        if self.start is None and self.until is None:
            raise ValueError("a window needs 'from', 'until' or both")
        if self.start is not None and self.until is not None and self.start >= self.until:
            raise ValueError("'from' must be before 'until'")
        return self


def _match_mapping(value: Any) -> Any:
    if value is None:
        raise ValueError("must be a mapping (use {} to match every flow)")
    return value


class RuleSpec(_Spec):
    name: _Str | None = None
    match: Annotated[MatchSpec, BeforeValidator(_match_mapping)] = MatchSpec()
    action: _ActionSpec
    probability: _Fraction = 1.0
    residual: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    active: Annotated[tuple[WindowSpec, ...], BeforeValidator(_one_or_many)] | None = None


class PolicySpec(_Spec):
    description: str | None = None
    rules: Annotated[tuple[RuleSpec, ...], BeforeValidator(_as_tuple)]
