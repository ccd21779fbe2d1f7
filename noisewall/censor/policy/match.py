"""A rule's conditions compiled to one test on a flow: protocol, names, addresses, ports."""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Any, TypeAlias

from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.policy.schema import MatchSpec

_Check: TypeAlias = Callable[[FlowRecord], bool]


_Text: TypeAlias = Callable[[str], object]


def _matcher(patterns: tuple[str, ...]) -> _Text:
    """One precompiled test for glob / ``re:`` patterns over a lower-cased value.

    Exact names go in a set; globs (anchored) and group-free regexes share one
    alternation, so a lookup is one set probe and at most one ``search``.
    """
    exact: set[str] = set()
    parts: list[str] = []
    alone: list[re.Pattern[str]] = []
    for pattern in patterns:
        if pattern.startswith("re:"):
            compiled = re.compile(pattern[3:], re.IGNORECASE)
            if compiled.groups:  # backreferences would shift in a combined pattern
                alone.append(compiled)
            else:
                parts.append(pattern[3:])
        elif any(c in pattern for c in "*?["):
            parts.append(rf"\A{fnmatch.translate(pattern.lower())}")
        else:
            exact.add(pattern.lower())
    if parts:
        try:
            combined = re.compile("|".join(f"(?:{part})" for part in parts), re.IGNORECASE)
        except (re.error, RecursionError, OverflowError, ValueError):  # e.g. inline flags
            alone[:0] = [re.compile(part, re.IGNORECASE) for part in parts]
        else:
            alone.insert(0, combined)
    names = frozenset(exact)
    searches = tuple(compiled.search for compiled in alone)
    if not searches:
        return names.__contains__
    if not names and len(searches) == 1:
        return searches[0]

    def test(value: str) -> bool:
        if value in names:
            return True
        for search in searches:  # noqa: SIM110 - hot path
            if search(value):
                return True
        return False

    return test


@functools.lru_cache(maxsize=65536)
def _ip_value(host: str) -> tuple[int, int] | None:
    """``(version, integer)`` of an IP address text, ``None`` for a host name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.version, int(addr)


def _domain(value: str) -> str:
    return value.lower().rstrip(".")


def _host_header(value: str) -> str:
    """An HTTP Host header value without its port, lower-cased."""
    if value.startswith("["):
        end = value.find("]")
        return _domain(value[1:end] if end > 0 else value)
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return _domain(value)


def _all(checks: list[_Check]) -> _Check:
    """The conjunction of ``checks`` as one call (specialised for short lists)."""
    if not checks:
        return lambda f: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        a, b = checks
        return lambda f: a(f) and b(f)
    if len(checks) == 3:
        a, b, c = checks
        return lambda f: a(f) and b(f) and c(f)
    rest = tuple(checks)

    def test(flow: FlowRecord) -> bool:
        for check in rest:  # noqa: SIM110 - hot path
            if not check(flow):
                return False
        return True

    return test


class Match:
    """A rule's compiled conditions; call it on a flow (or use :attr:`test`)."""

    __slots__ = ("conditions", "spec", "test")

    def __init__(self, spec: MatchSpec | None = None) -> None:
        spec = spec if spec is not None else MatchSpec()
        #: The validated conditions (for compiling ``transport: udp`` rules to nftables).
        self.spec = spec
        #: The conditions (normalised), for logs and ``as_json``.
        self.conditions: dict[str, Any] = _describe(spec)
        # Cheapest first: attribute compares, then set probes, then patterns, then addresses.
        checks: list[_Check] = []
        if spec.transport is not None:
            transport = spec.transport
            checks.append(lambda f: f.transport == transport)
        if spec.fully_encrypted is not None:
            checks.append(
                (lambda f: f.fully_encrypted)
                if spec.fully_encrypted
                else (lambda f: not f.fully_encrypted)
            )
        if spec.protocol is not None:
            protocols = frozenset(spec.protocol)
            checks.append(lambda f: f.protocol in protocols)
        if spec.port is not None:
            checks.append(_port_check(spec.port))
        if spec.ja3 is not None:
            ja3 = _matcher(spec.ja3)
            checks.append(lambda f: (v := f.ja3) is not None and bool(ja3(v.lower())))
        if spec.ja4 is not None:
            ja4 = _matcher(spec.ja4)
            checks.append(lambda f: (v := f.ja4) is not None and bool(ja4(v.lower())))
        if spec.sni is not None:
            sni = _matcher(spec.sni)
            checks.append(lambda f: (v := f.sni) is not None and bool(sni(v.lower().rstrip("."))))
        if spec.query is not None:
            query = _matcher(spec.query)
            checks.append(lambda f: (v := f.query) is not None and bool(query(_domain(v))))
        if spec.host is not None:
            host = _matcher(spec.host)
            checks.append(lambda f: (v := f.host) is not None and bool(host(_host_header(v))))
        if spec.server is not None:
            checks.append(_server_check(spec.server))
        #: The compiled test: ``test(flow)`` is true if every condition holds.
        self.test: _Check = _all(checks)

    @classmethod
    def of(cls, **conditions: Any) -> Match:
        """Conditions in code, with the YAML ``match:`` keys and values.

        ``Match.of(sni="*.twitter.com", port=443)``; raises
        :class:`pydantic.ValidationError` (a :class:`ValueError`) if invalid.
        """
        return cls(MatchSpec.model_validate(conditions))

    def __call__(self, flow: FlowRecord) -> bool:
        """True if every condition holds for ``flow``."""
        return self.test(flow)


def _describe(spec: MatchSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("protocol", "sni", "host", "query", "server", "ja3", "ja4"):
        value = getattr(spec, name)
        if value is not None:
            out[name] = list(value)
    if spec.port is not None:
        out["port"] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in spec.port]
    if spec.fully_encrypted is not None:
        out["fully_encrypted"] = spec.fully_encrypted
    if spec.transport is not None:
        out["transport"] = spec.transport
    return out


def _port_check(entries: tuple[tuple[int, int], ...]) -> _Check:
    singles = frozenset(lo for lo, hi in entries if lo == hi)
    ranges = tuple((lo, hi) for lo, hi in entries if lo != hi)
    if not ranges:
        return lambda f: f.server.port in singles

    def check(flow: FlowRecord) -> bool:
        port = flow.server.port
        if port in singles:
            return True
        for lo, hi in ranges:  # noqa: SIM110 - hot path
            if lo <= port <= hi:
                return True
        return False

    return check


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _server_check(entries: tuple[str, ...]) -> _Check:
    nets: list[tuple[int, int, int]] = []
    names: list[str] = []
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry)
        except ValueError:
            names.append(entry)
            continue
        if (
            isinstance(net, ipaddress.IPv6Network)
            and net.subnet_of(_MAPPED)
            and net.prefixlen >= 96
        ):
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        nets.append((net.version, int(net.network_address), int(net.broadcast_address)))
    net_ranges = tuple(nets)
    name_patterns = _matcher(tuple(names)) if names else None

    def check(flow: FlowRecord) -> bool:
        host = flow.server.host
        value = _ip_value(host)
        if value is None:
            return name_patterns is not None and bool(name_patterns(_domain(host)))
        version, number = value
        for net_version, lo, hi in net_ranges:
            if net_version == version and lo <= number <= hi:
                return True
        return False

    return check
