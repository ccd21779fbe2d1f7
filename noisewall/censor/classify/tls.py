"""TLS ClientHello, parsed sans-IO from the first bytes a client sent.

The client's first data on a TLS connection is one ClientHello handshake
message (RFC 8446 section 4.1.2; RFC 5246 section 7.4.1.2 for TLS <= 1.2),
carried in one or more handshake records (RFC 8446 section 5.1: a handshake
message may be fragmented over several records, and records over several TCP
segments). :func:`parse` reassembles the records, checks the framing of every
length-prefixed vector as far as the bytes go, and reports "need more" while
what has arrived is still a valid prefix. SSL 2.0-style hellos (first byte
0x80) are not TLS records and are not recognised.

Fingerprints, and where their definitions come from:

* **JA3** -- Salesforce, https://github.com/salesforce/ja3 (README.md and
  ``python/ja3/ja3.py``): the decimal values of
  ``SSLVersion,Cipher,SSLExtension,EllipticCurve,EllipticCurvePointFormat``,
  each list joined with ``-``, GREASE values (draft-davidben-tls-grease,
  RFC 8701) removed from every list; ``SSLVersion`` is the ClientHello's
  ``legacy_version``; the fingerprint is the MD5 of that string.
* **JA4** (TLS client) -- FoxIO, https://github.com/FoxIO-LLC/ja4
  ``technical_details/JA4.md`` and the reference implementation
  ``rust/ja4/src/tls.rs``: ``t`` (TCP), the highest non-GREASE
  ``supported_versions`` entry else ``legacy_version`` (13/12/11/10/s3/s2/s1,
  ``00`` if unknown), ``d`` if the SNI extension is present else ``i``, the
  2-digit counts (capped at 99) of non-GREASE cipher suites and extensions
  (SNI and ALPN included), the first and last characters of the first ALPN
  value (``00`` if none; if either end byte is not an ASCII letter or digit,
  the first and last characters of its hex form), then ``_`` + the first 12 hex
  digits of SHA-256 over the cipher suites as 4-digit lowercase hex, sorted,
  comma-joined, then ``_`` + the same over the sorted extensions without SNI
  (0000) and ALPN (0010), followed by ``_`` and the signature algorithms in the
  order sent (no ``_`` when there are none). An empty list hashes to twelve
  zeros, as in the reference implementation's ``hash12``.

The tests check both against published ClientHellos with known fingerprints
(CyberChef's and s2n-tls's test vectors) and against OpenSSL's own decoding.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult, NeedMore

CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
#: RFC 8446 section 5.1: a TLSPlaintext fragment MUST NOT exceed 2^14 bytes.
MAX_RECORD = 1 << 14
#: A ClientHello body is a few hundred bytes, a few KiB with post-quantum key
#: shares; one of more than 128 KiB is not a real client's.
MAX_HELLO = 1 << 17
#: version(2) random(32) session_id(1) cipher_suites(2+2) compression(1+1).
MIN_HELLO = 41

EXT_SERVER_NAME = 0x0000
EXT_SUPPORTED_GROUPS = 0x000A
EXT_EC_POINT_FORMATS = 0x000B
EXT_SIGNATURE_ALGORITHMS = 0x000D
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B

#: RFC 8701 GREASE values: 0x0a0a, 0x1a1a, ... 0xfafa.
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))

VERSION_NAMES = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
_JA4_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0200: "s2",
    0x0100: "s1",
}
#: JA4 leaves SNI and ALPN out of the extension hash: section a already shows them.
_NOT_HASHED = frozenset({EXT_SERVER_NAME, EXT_ALPN})
_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class TLSError(ValueError):
    """The bytes cannot be the start of a TLS ClientHello."""


class _Truncated(Exception):
    """Internal: the bytes so far are a valid prefix; more are needed."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The fields of one ClientHello that classification and fingerprints use.

    Lists keep the order and the GREASE values the client sent;
    ``malformed`` names extensions whose contents did not parse (their fields
    are then left empty).
    """

    record_version: int
    legacy_version: int
    cipher_suites: tuple[int, ...]
    extensions: tuple[int, ...]
    sni: str | None
    alpn: tuple[bytes, ...]
    supported_versions: tuple[int, ...]
    supported_groups: tuple[int, ...]
    ec_point_formats: tuple[int, ...]
    signature_algorithms: tuple[int, ...]
    records: int
    malformed: tuple[int, ...] = ()

    @property
    def version(self) -> int:
        """The highest version offered: ``supported_versions`` if sent, else ``legacy_version``."""
        offered = [v for v in self.supported_versions if v not in GREASE]
        return max(offered) if offered else self.legacy_version

    @property
    def alpn_names(self) -> list[str]:
        """The ALPN protocol names, decoded (undecodable bytes replaced)."""
        return [name.decode("utf-8", "replace") for name in self.alpn]


def version_name(version: int) -> str:
    """``TLS 1.3`` and the like; ``0x7f12`` for a value without a name."""
    return VERSION_NAMES.get(version, f"0x{version:04x}")


def _check_record_header(header: bytes) -> None:
    """Reject a (possibly partial) record header that cannot start a handshake record."""
    if header[0] != CONTENT_HANDSHAKE:
        raise TLSError(f"record content type {header[0]} is not handshake (22)")
    if len(header) > 1 and header[1] != 3:
        raise TLSError(f"record version major {header[1]} is not 3")
    if len(header) > 2 and header[2] > 4:
        raise TLSError(f"record version 3.{header[2]} is not SSL 3.0 .. TLS 1.3")
    if len(header) == 5:
        length = (header[3] << 8) | header[4]
        if not 0 < length <= MAX_RECORD:
            raise TLSError(f"record length {length} is not 1..{MAX_RECORD}")


def _reassemble(data: bytes) -> tuple[bytes, int, int, bool]:
    """Handshake bytes from the leading records.

    Returns (handshake bytes so far, record version, records used, whether the
    whole ClientHello is there). Raises :class:`TLSError` on a bad record header.
    """
    parts: list[bytes] = []
    have = 0
    needed = -1  # 4 + handshake length, once the handshake header is known
    pos = 0
    records = 0
    record_version = -1
    end = len(data)
    while pos < end:
        header = data[pos : pos + 5]
        _check_record_header(header)
        if len(header) < 5:
            break
        if records == 0:
            record_version = (header[1] << 8) | header[2]
        length = (header[3] << 8) | header[4]
        fragment = data[pos + 5 : pos + 5 + length]
        parts.append(fragment)
        have += len(fragment)
        records += 1
        if needed < 0 and have >= 4:
            head = parts[0][:4] if len(parts[0]) >= 4 else b"".join(parts)[:4]
            needed = 4 + int.from_bytes(head[1:4], "big")
        if len(fragment) < length or (needed >= 0 and have >= needed):
            break
        pos += 5 + length
    handshake = parts[0] if len(parts) == 1 else b"".join(parts)
    return handshake, record_version, records, needed >= 0 and have >= needed


def _u16s(data: bytes, start: int, length: int) -> tuple[int, ...]:
    return struct.unpack_from(f">{length >> 1}H", data, start)


def _parse_body(
    body: bytes, declared: int
) -> tuple[int, tuple[int, ...], list[tuple[int, int, int]]]:
    """Walk the ClientHello body framing over the bytes available.

    ``declared`` is the handshake length; ``body`` may be shorter (a prefix).
    Returns (legacy_version, cipher_suites, [(ext type, start, end)]).
    Raises :class:`TLSError` on a framing error, :class:`_Truncated` if a valid
    prefix stops short.
    """
    avail = len(body)

    def take(pos: int, count: int) -> int:
        if pos + count > declared:
            raise TLSError("a field runs past the end of the ClientHello")
        if pos + count > avail:
            raise _Truncated
        return pos + count

    pos = take(0, 2)
    if body[0] != 3 or body[1] > 4:
        raise TLSError(f"ClientHello version {body[0]}.{body[1]} is not SSL 3.0 .. TLS 1.3")
    legacy_version = (body[0] << 8) | body[1]
    pos = take(pos, 33)  # random, session id length
    session_id_len = body[pos - 1]
    if session_id_len > 32:
        raise TLSError(f"session id of {session_id_len} bytes (at most 32)")
    pos = take(pos, session_id_len + 2)
    suites_len = (body[pos - 2] << 8) | body[pos - 1]
    if suites_len < 2 or suites_len % 2:
        raise TLSError(f"cipher suites vector of {suites_len} bytes")
    start = pos
    pos = take(pos, suites_len + 1)
    cipher_suites = _u16s(body, start, suites_len)
    compression_len = body[pos - 1]
    if compression_len < 1:
        raise TLSError("empty compression methods")
    start = pos
    pos = take(pos, compression_len)
    if 0 not in body[start:pos]:
        raise TLSError("compression methods without null (0)")
    extensions: list[tuple[int, int, int]] = []
    if pos == declared:
        return legacy_version, cipher_suites, extensions  # no extensions (SSL 3.0 style)
    pos = take(pos, 2)
    if pos + ((body[pos - 2] << 8) | body[pos - 1]) != declared:
        raise TLSError("extensions length does not match the ClientHello length")
    limit = min(avail, declared)
    append = extensions.append
    while pos + 4 <= limit:
        end = pos + 4 + ((body[pos + 2] << 8) | body[pos + 3])
        if end > limit:
            break
        append(((body[pos] << 8) | body[pos + 1], pos + 4, end))
        pos = end
    if pos < declared:  # the last extension header or body is cut or overlong
        take(pos, 4)
        take(pos + 4, (body[pos + 2] << 8) | body[pos + 3])
    return legacy_version, cipher_suites, extensions


def _vector(data: bytes, start: int, end: int, width: int) -> int:
    """Where the items of a vector with a ``width``-byte length filling [start, end) begin."""
    if end - start < width:
        raise TLSError("extension too short for its length field")
    length = data[start] if width == 1 else (data[start] << 8) | data[start + 1]
    if start + width + length != end:
        raise TLSError("extension vector length mismatch")
    return start + width


def _server_name(body: bytes, start: int, end: int) -> str | None:
    pos = _vector(body, start, end, 2)
    name: str | None = None
    while pos < end:
        if pos + 3 > end:
            raise TLSError("truncated server name entry")
        name_type = body[pos]
        length = (body[pos + 1] << 8) | body[pos + 2]
        pos += 3
        if pos + length > end:
            raise TLSError("server name runs past its list")
        if name_type == 0 and name is None:
            name = body[pos : pos + length].decode("utf-8", "replace")
        pos += length
    return name


def _alpn(body: bytes, start: int, end: int) -> tuple[bytes, ...]:
    pos = _vector(body, start, end, 2)
    names: list[bytes] = []
    while pos < end:
        length = body[pos]
        pos += 1
        if pos + length > end:
            raise TLSError("ALPN name runs past its list")
        names.append(body[pos : pos + length])
        pos += length
    return tuple(names)


def _u16_list(body: bytes, start: int, end: int, width: int) -> tuple[int, ...]:
    pos = _vector(body, start, end, width)
    if (end - pos) % 2:
        raise TLSError("odd length for a list of 16-bit values")
    return _u16s(body, pos, end - pos)


def _u16_list2(body: bytes, start: int, end: int) -> tuple[int, ...]:
    return _u16_list(body, start, end, 2)


def _u16_list1(body: bytes, start: int, end: int) -> tuple[int, ...]:
    return _u16_list(body, start, end, 1)


def _u8_list1(body: bytes, start: int, end: int) -> tuple[int, ...]:
    return tuple(body[_vector(body, start, end, 1) : end])


#: How to read the contents of the extensions classification and fingerprints use.
_EXTENSION_READERS: dict[int, Callable[[bytes, int, int], Any]] = {
    EXT_SERVER_NAME: _server_name,
    EXT_ALPN: _alpn,
    EXT_SUPPORTED_GROUPS: _u16_list2,
    EXT_EC_POINT_FORMATS: _u8_list1,
    EXT_SIGNATURE_ALGORITHMS: _u16_list2,
    EXT_SUPPORTED_VERSIONS: _u16_list1,
}


def parse(data: bytes) -> ClientHello | NeedMore:
    """Parse the ClientHello at the start of ``data``.

    Returns :data:`NEED_MORE` while ``data`` is a valid but incomplete prefix;
    raises :class:`TLSError` as soon as it cannot be a ClientHello. Bytes after
    the ClientHello are ignored.
    """
    if not data:
        return NEED_MORE
    handshake, record_version, records, complete = _reassemble(data)
    if not handshake:
        return NEED_MORE
    if handshake[0] != HANDSHAKE_CLIENT_HELLO:
        raise TLSError(f"handshake type {handshake[0]} is not ClientHello (1)")
    if len(handshake) < 4:
        return NEED_MORE
    declared = int.from_bytes(handshake[1:4], "big")
    if not MIN_HELLO <= declared <= MAX_HELLO:
        raise TLSError(f"ClientHello length {declared} is not {MIN_HELLO}..{MAX_HELLO}")
    body = handshake[4 : 4 + declared]
    try:
        legacy_version, cipher_suites, extensions = _parse_body(body, declared)
    except _Truncated:
        return NEED_MORE
    if not complete:  # pragma: no cover - _parse_body needs every declared byte
        return NEED_MORE

    fields: dict[int, Any] = {}
    malformed: list[int] = []
    for ext_type, start, end in extensions:
        reader = _EXTENSION_READERS.get(ext_type)
        if reader is not None:
            try:
                fields[ext_type] = reader(body, start, end)
            except TLSError:
                malformed.append(ext_type)
    get = fields.get
    return ClientHello(
        record_version=record_version,
        legacy_version=legacy_version,
        cipher_suites=cipher_suites,
        extensions=tuple([ext[0] for ext in extensions]),
        sni=get(EXT_SERVER_NAME),
        alpn=get(EXT_ALPN, ()),
        supported_versions=get(EXT_SUPPORTED_VERSIONS, ()),
        supported_groups=get(EXT_SUPPORTED_GROUPS, ()),
        ec_point_formats=get(EXT_EC_POINT_FORMATS, ()),
        signature_algorithms=get(EXT_SIGNATURE_ALGORITHMS, ()),
        records=records,
        malformed=tuple(malformed),
    )


class _Decimal(dict[int, str]):
    """``str(value)`` for 16-bit values, memoised (at most 65536 entries)."""

    def __missing__(self, key: int) -> str:
        text = self[key] = str(key)
        return text


_DECIMAL = _Decimal()


def _no_grease(values: tuple[int, ...]) -> tuple[int, ...]:
    if GREASE.isdisjoint(values):
        return values
    return tuple([v for v in values if v not in GREASE])


def _hex_list(values: list[int] | tuple[int, ...]) -> str:
    """``0a0b,1301`` for [0x0a0b, 0x1301]."""
    return struct.pack(f">{len(values)}H", *values).hex(",", 2)


def _ja3(hello: ClientHello, ciphers: tuple[int, ...], extensions: tuple[int, ...]) -> str:
    dec = _DECIMAL.__getitem__
    return ",".join((
        str(hello.legacy_version),
        "-".join(map(dec, ciphers)),
        "-".join(map(dec, extensions)),
        "-".join(map(dec, _no_grease(hello.supported_groups))),
        "-".join(map(dec, hello.ec_point_formats)),
    ))


def ja3_string(hello: ClientHello) -> str:
    """The JA3 string: ``SSLVersion,Cipher,SSLExtension,EllipticCurve,EllipticCurvePointFormat``."""
    return _ja3(hello, _no_grease(hello.cipher_suites), _no_grease(hello.extensions))


def ja3_hash(ja3: str) -> str:
    """MD5 of a JA3 string, as 32 lowercase hex digits."""
    return hashlib.md5(ja3.encode("ascii"), usedforsecurity=False).hexdigest()


def _alpn_code(hello: ClientHello) -> str:
    if not hello.alpn or not hello.alpn[0]:
        return "00"
    first = hello.alpn[0]
    if first[0] in _ALNUM and first[-1] in _ALNUM:
        return chr(first[0]) + chr(first[-1])
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _hash12(text: str) -> str:
    if not text:
        return "000000000000"
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _ja4_parts(
    hello: ClientHello, ciphers: tuple[int, ...], extensions: tuple[int, ...]
) -> tuple[str, str, str]:
    sni = "d" if EXT_SERVER_NAME in extensions else "i"
    version = _JA4_VERSIONS.get(hello.version, "00")
    prefix = (
        f"t{version}{sni}{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}"
        f"{_alpn_code(hello)}"
    )
    ext_part = _hex_list(sorted([v for v in extensions if v not in _NOT_HASHED]))
    sigalgs = _no_grease(hello.signature_algorithms)
    if sigalgs:
        ext_part = f"{ext_part}_{_hex_list(sigalgs)}"
    return prefix, _hex_list(sorted(ciphers)), ext_part


def ja4_parts(hello: ClientHello) -> tuple[str, str, str]:
    """JA4's three sections unhashed: (prefix, sorted ciphers, sorted extensions[_sigalgs])."""
    return _ja4_parts(hello, _no_grease(hello.cipher_suites), _no_grease(hello.extensions))


def ja4(hello: ClientHello) -> str:
    """The JA4 TLS client fingerprint, e.g. ``t13d1516h2_8daaf6152771_e5627efa2ab1``."""
    prefix, ciphers, extensions = ja4_parts(hello)
    return f"{prefix}_{_hash12(ciphers)}_{_hash12(extensions)}"


def ja4_raw(hello: ClientHello) -> str:
    """JA4_r: the fingerprint with its lists instead of their hashes."""
    return "_".join(ja4_parts(hello))


def features(hello: ClientHello) -> dict[str, Any]:
    """The evidence a :class:`Detection` carries for one ClientHello."""
    ciphers = _no_grease(hello.cipher_suites)
    extensions = _no_grease(hello.extensions)
    ja3 = _ja3(hello, ciphers, extensions)
    prefix, sorted_ciphers, sorted_extensions = _ja4_parts(hello, ciphers, extensions)
    versions = [v for v in hello.supported_versions if v not in GREASE] or [hello.legacy_version]
    return {
        "sni": hello.sni,
        "alpn": hello.alpn_names,
        "version": version_name(hello.version),
        "versions": [version_name(v) for v in versions],
        "legacy_version": version_name(hello.legacy_version),
        "ja3": ja3,
        "ja3_hash": ja3_hash(ja3),
        "ja4": f"{prefix}_{_hash12(sorted_ciphers)}_{_hash12(sorted_extensions)}",
        "ja4_r": f"{prefix}_{sorted_ciphers}_{sorted_extensions}",
        "cipher_count": len(ciphers),
        "extension_count": len(extensions),
        "cipher_suites": list(hello.cipher_suites),
        "extensions": list(hello.extensions),
        "supported_groups": list(hello.supported_groups),
        "ec_point_formats": list(hello.ec_point_formats),
        "signature_algorithms": list(hello.signature_algorithms),
        "records": hello.records,
        "malformed_extensions": list(hello.malformed),
    }


def inspect(data: bytes) -> InspectResult:
    """Classify the first bytes a client sent; never raises."""
    try:
        hello = parse(data)
        if hello is NEED_MORE:
            return NEED_MORE
        assert isinstance(hello, ClientHello)
        return Detection("tls", 0.9 if hello.malformed else 0.99, features(hello))
    except TLSError:
        return None
    except Exception:  # a parser bug must not take the censor down: treat as "not TLS"
        return None
