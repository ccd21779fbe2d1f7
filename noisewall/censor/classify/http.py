"""HTTP/1.x request, recognised from its request line and header block (RFC 9112).

``method SP request-target SP HTTP-version CRLF``, then ``field-name ":" OWS
field-value OWS CRLF`` lines up to an empty line (RFC 9112 sections 2.2, 3 and
5; a bare LF is accepted as a line end, as section 2.2 allows). The classifier
waits for the whole header block, up to :data:`MAX_HEADER_BLOCK` bytes, then
decides on what is there. Empty lines before the request line are skipped, as
servers do (section 2.2): a blank line first must not hide the Host. It
reports the Host header (case-insensitive name, port stripped), or the host of
an absolute-form or CONNECT target when there is no Host header.
"""

from __future__ import annotations

import re
from typing import Any

from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult

METHODS = frozenset({
    b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
})
#: The longest method name, with its space.
_METHOD_FIELD = max(len(m) for m in METHODS) + 1
#: Bytes of request line and headers worth waiting for; then decide on what is there.
MAX_HEADER_BLOCK = 16384

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# request-target: visible ASCII, no spaces (RFC 9112 section 3.2).
_TARGET_BYTE = re.compile(rb"[\x21-\x7e]*")
_VERSION = re.compile(rb"HTTP/1\.[0-9]")
_VERSION_PREFIX = b"HTTP/1."
_HEADER = re.compile(rb"([^:\s]+):[ \t]*(.*?)[ \t]*")
# Empty lines a server ignores before the request line (CRLF or a bare LF).
_LEADING_EMPTY_LINES = re.compile(rb"(?:\r?\n)*")
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")


class HTTPError(ValueError):
    """The bytes cannot be the start of an HTTP/1.x request."""


def strip_port(authority: str) -> str:
    """``example.org`` from ``Example.org:8080``; ``::1`` from ``[::1]:80``; lowercased."""
    authority = authority.strip().rpartition("@")[2]  # userinfo@host in absolute-form
    if authority.startswith("["):
        return authority[1:].partition("]")[0].lower()
    host, colon, port = authority.rpartition(":")
    if colon and (port.isdigit() or not port) and ":" not in host:
        return host.lower()
    return authority.lower()


def _request_line_prefix(line: bytes) -> None:
    """Reject an incomplete request line that cannot become a valid one."""
    method, space, rest = line.partition(b" ")
    if not space:
        if len(method) >= _METHOD_FIELD or not any(m.startswith(method) for m in METHODS):
            raise HTTPError("not an HTTP method")
        return
    if method not in METHODS:
        raise HTTPError(f"unknown method {method[:16]!r}")
    target, space, version = rest.partition(b" ")
    if not _TARGET_BYTE.fullmatch(target) or (space and not target):
        raise HTTPError("bad request target")
    if space and not _version_prefix_ok(version):
        raise HTTPError("bad HTTP version")


def _version_prefix_ok(version: bytes) -> bool:
    """Whether ``version`` (maybe ending in CR) can still become ``HTTP/1.<digit>``."""
    if version.endswith(b"\r"):
        return _VERSION.fullmatch(version[:-1]) is not None
    if len(version) <= len(_VERSION_PREFIX):
        return _VERSION_PREFIX.startswith(version)
    return _VERSION.fullmatch(version) is not None


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HTTPError("request line is not method SP target SP version")
    method, target, version = parts
    if method not in METHODS:
        raise HTTPError(f"unknown method {method[:16]!r}")
    if not target or not _TARGET_BYTE.fullmatch(target):
        raise HTTPError("bad request target")
    if not _VERSION.fullmatch(version):
        raise HTTPError("bad HTTP version")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def inspect(data: bytes) -> InspectResult:
    """Classify the first bytes a client sent; never raises."""
    try:
        return _inspect(data[:MAX_HEADER_BLOCK], capped=len(data) >= MAX_HEADER_BLOCK)
    except HTTPError:
        return None
    except Exception:  # a parser bug must not take the censor down: treat as "not HTTP"
        return None


def _inspect(data: bytes, capped: bool) -> InspectResult:
    leading = _LEADING_EMPTY_LINES.match(data)
    data = data[leading.end() if leading else 0 :]
    if data in (b"", b"\r"):  # nothing yet past the empty lines, or half of one more
        return NEED_MORE
    line_end = data.find(b"\n")
    if line_end < 0:
        _request_line_prefix(data)
        if capped:  # a request line longer than the cap: an HTTP method, little else
            method = data.split(b" ")[0].decode("ascii")
            return Detection("http", 0.6, {"method": method, "truncated": True})
        return NEED_MORE
    line = data[:line_end]
    method, target, version = _parse_request_line(line[:-1] if line.endswith(b"\r") else line)
    features: dict[str, Any] = {"method": method, "target": target, "version": version}

    complete = False
    malformed = False
    headers: list[tuple[str, str]] = []
    lines = data[line_end + 1 :].split(b"\n")
    for line_bytes in lines[:-1]:  # whole lines only: the last one may still be arriving
        raw = line_bytes[:-1] if line_bytes.endswith(b"\r") else line_bytes
        if not raw:
            complete = True  # the empty line that ends the header block
            break
        if raw[:1] in (b" ", b"\t"):  # obsolete line folding: continues the previous value
            if not headers:
                malformed = True
                break
            continue
        header = _HEADER.fullmatch(raw)
        if header is None or not _TOKEN.fullmatch(header.group(1)):
            malformed = True
            break
        headers.append((header.group(1).decode("ascii").lower(), header.group(2).decode("latin-1")))
    if not complete and not malformed and not capped:
        return NEED_MORE

    names = [name for name, _ in headers]
    host_values = [value for name, value in headers if name == "host"]
    host: str | None = strip_port(host_values[0]) if host_values and host_values[0] else None
    if host is None:
        absolute = _ABSOLUTE.match(target)
        if absolute:
            host = strip_port(absolute.group(1)) or None
        elif method == "CONNECT":
            host = strip_port(target) or None
    agents = [value for name, value in headers if name == "user-agent"]
    features.update(
        host=host,
        user_agent=agents[0] if agents else None,
        header_names=names,
        header_count=len(headers),
        truncated=not complete and not malformed,
        malformed=malformed or len(host_values) > 1,
    )
    if malformed or len(host_values) > 1:
        confidence = 0.7
    elif not complete:
        confidence = 0.8
    elif host_values or version == "HTTP/1.0":
        confidence = 0.99
    else:
        confidence = 0.95  # HTTP/1.1 requires Host (RFC 9112 section 3.2)
    return Detection("http", confidence, features)
