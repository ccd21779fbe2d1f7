"""Python exceptions to OONI failure strings (``df-007-errors.md``), sans-IO.

:func:`failure_string` names any exception a probe can meet the way OONI
names it, so noisewall's measurements can be read next to OONI's. Wrappers
(aiohttp's connector errors, the media client's typed errors, SOCKS errors)
are looked through to the error that caused them. Mapping choices where
df-007 has no exact entry:

* ``EPIPE`` (writing to a connection the peer has reset) is
  ``connection_reset``: that is what happened on the wire.
* A media certificate that is not the pinned one is ``ssl_invalid_certificate``.
* A SOCKS5 refusal maps its reply code (``connection_refused``,
  ``host_unreachable``, ``network_unreachable``, ...); any other SOCKS
  problem is ``socks_error`` (df-007, legacy table).
* A Noise handshake that fails cryptographically (the bytes were altered
  on the way) is ``unknown_failure: noise_decrypt_error``; a NoiseSocket
  negotiation refusal ``unknown_failure: noise_negotiation_error``.
* Anything else is ``unknown_failure: <ExceptionType>`` (never the message,
  which could carry addresses or data).
"""

from __future__ import annotations

import errno
import ssl

import aiohttp

from noisewall.messenger.connection import ChatError
from noisewall.messenger.mediaclient import MediaClientError, MediaPinError
from noisewall.noise.errors import ConnectionClosedError, DecryptError, NegotiationError
from noisewall.socks5 import Reply, Socks5Error

#: errno -> OONI failure string (df-007).
ERRNO_FAILURES = {
    errno.ECONNRESET: "connection_reset",
    errno.EPIPE: "connection_reset",
    errno.ECONNREFUSED: "connection_refused",
    errno.ECONNABORTED: "connection_aborted",
    errno.EHOSTUNREACH: "host_unreachable",
    errno.ENETUNREACH: "network_unreachable",
    errno.ENETDOWN: "network_down",
    errno.ENETRESET: "network_reset",
    errno.ETIMEDOUT: "generic_timeout_error",
}

_SOCKS_REPLY: dict[int, str] = {
    Reply.CONNECTION_REFUSED: "connection_refused",
    Reply.HOST_UNREACHABLE: "host_unreachable",
    Reply.NETWORK_UNREACHABLE: "network_unreachable",
    Reply.NOT_ALLOWED: "socks_connection_not_allowed",
    Reply.TTL_EXPIRED: "socks_ttl_expired",
}

# OpenSSL X509_V_ERR_* codes that mean "no trusted issuer".
_UNKNOWN_AUTHORITY = frozenset({2, 18, 19, 20, 21})
_HOSTNAME_MISMATCH = 62

#: Every failure string :func:`failure_string` returns, besides ``unknown_failure: ...``.
KNOWN_FAILURES = frozenset(
    {*ERRNO_FAILURES.values(), *_SOCKS_REPLY.values(), "generic_timeout_error", "eof_error",
     "socks_error", "ssl_invalid_certificate", "ssl_unknown_authority",
     "ssl_invalid_hostname", "ssl_failed_handshake", "http_request_failed"}
)

_MAX_DEPTH = 8


def failure_string(exc: BaseException) -> str:
    """The OONI failure string for ``exc`` (see the module documentation)."""
    current: BaseException | None = exc
    for _ in range(_MAX_DEPTH):
        if current is None:
            break
        named = _direct(current)
        if named is not None:
            return named
        current = _cause(current)
    return f"unknown_failure: {type(exc).__name__}"


def _cause(exc: BaseException) -> BaseException | None:
    """The error a wrapper stands for, if any."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__


def _direct(exc: BaseException) -> str | None:
    """The name of ``exc`` itself, or None when only its cause can tell."""
    if isinstance(exc, TimeoutError):
        return "generic_timeout_error"
    if isinstance(exc, Socks5Error):
        return _SOCKS_REPLY.get(exc.reply, "socks_error")
    if isinstance(exc, MediaPinError | aiohttp.ServerFingerprintMismatch):
        return "ssl_invalid_certificate"
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _UNKNOWN_AUTHORITY:
            return "ssl_unknown_authority"
        if exc.verify_code == _HOSTNAME_MISMATCH:
            return "ssl_invalid_hostname"
        return "ssl_invalid_certificate"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        if "EOF" in reason or isinstance(exc, ssl.SSLEOFError):
            return "eof_error"
        return "ssl_failed_handshake"
    if isinstance(exc, ConnectionResetError):
        return "connection_reset"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionAbortedError):
        return "connection_aborted"
    if isinstance(exc, OSError) and exc.errno in ERRNO_FAILURES:
        return ERRNO_FAILURES[exc.errno]
    if isinstance(exc, EOFError | ConnectionClosedError | aiohttp.ServerDisconnectedError
                  | aiohttp.ClientPayloadError):
        return "eof_error"
    if isinstance(exc, DecryptError):
        return "unknown_failure: noise_decrypt_error"
    if isinstance(exc, NegotiationError):
        return "unknown_failure: noise_negotiation_error"
    if isinstance(exc, ChatError):
        return f"unknown_failure: chat_{exc.code}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "http_request_failed"
    if isinstance(exc, MediaClientError) and _cause(exc) is None:
        return "http_request_failed"  # the server answered, with a refusal
    return None
