"""Every exception a probe meets gets OONI's failure string (df-007)."""

from __future__ import annotations

import asyncio
import errno
import ssl

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from noisewall.messenger.connection import ChatError
from noisewall.messenger.mediaclient import (
    MediaAuthError,
    MediaPinError,
    MediaTransferError,
)
from noisewall.noise.errors import ConnectionClosedError, DecryptError, NegotiationError
from noisewall.probe.failures import KNOWN_FAILURES, failure_string
from noisewall.socks5 import Reply, Socks5Error


def _wrapped(inner: BaseException) -> MediaTransferError:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise MediaTransferError("media server unreachable") from exc
    except MediaTransferError as outer:
        return outer


def _cert_error(code: int) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    return exc


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionResetError(errno.ECONNRESET, "reset"), "connection_reset"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
    (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "connection_aborted"),
    (BrokenPipeError(errno.EPIPE, "pipe"), "connection_reset"),
    (OSError(errno.EHOSTUNREACH, "no route"), "host_unreachable"),
    (OSError(errno.ENETUNREACH, "unreachable"), "network_unreachable"),
    (OSError(errno.ENETDOWN, "down"), "network_down"),
    (OSError(errno.ETIMEDOUT, "timed out"), "generic_timeout_error"),
    (TimeoutError(), "generic_timeout_error"),
    (asyncio.IncompleteReadError(b"", 2), "eof_error"),
    (ConnectionClosedError("closed"), "eof_error"),
    (EOFError(), "eof_error"),
    (aiohttp.ServerDisconnectedError(), "eof_error"),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "eof_error"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
     "ssl_failed_handshake"),
    (_cert_error(20), "ssl_unknown_authority"),
    (_cert_error(62), "ssl_invalid_hostname"),
    (_cert_error(10), "ssl_invalid_certificate"),
    (MediaPinError("not the pinned certificate"), "ssl_invalid_certificate"),
    (Socks5Error("refused", Reply.CONNECTION_REFUSED), "connection_refused"),
    (Socks5Error("not allowed", Reply.NOT_ALLOWED), "socks_connection_not_allowed"),
    (Socks5Error("bad method"), "socks_error"),
    (MediaAuthError("HTTP 401"), "http_request_failed"),
    (_wrapped(ConnectionResetError(errno.ECONNRESET, "reset")), "connection_reset"),
    (_wrapped(TimeoutError()), "generic_timeout_error"),
    (DecryptError("bad tag"), "unknown_failure: noise_decrypt_error"),
    (NegotiationError("refused"), "unknown_failure: noise_negotiation_error"),
    (ChatError("not_registered", "register first"), "unknown_failure: chat_not_registered"),
    (ValueError("something else"), "unknown_failure: ValueError"),
])
def test_each_exception_has_its_ooni_name(exc: BaseException, expected: str) -> None:
    assert failure_string(exc) == expected


def test_aiohttp_connector_errors_are_named_by_their_os_error() -> None:
    key = aiohttp.client_reqrep.ConnectionKey("localhost", 443, True, True, None, None, None)
    exc = aiohttp.ClientConnectorError(key, ConnectionResetError(errno.ECONNRESET, "reset"))
    assert failure_string(exc) == "connection_reset"


def test_a_suppressed_context_is_not_looked_through() -> None:
    try:
        try:
            raise ConnectionResetError(errno.ECONNRESET, "reset")
        except ConnectionResetError:
            raise ValueError("unrelated") from None
    except ValueError as exc:
        assert failure_string(exc) == "unknown_failure: ValueError"


def test_a_cycle_of_causes_terminates() -> None:
    a, b = ValueError("a"), KeyError("b")
    a.__cause__, b.__cause__ = b, a
    assert failure_string(a) == "unknown_failure: ValueError"


@given(st.integers(min_value=0, max_value=200), st.text(max_size=30))
def test_any_os_error_gets_a_df007_string(code: int, message: str) -> None:
    exc = OSError(code, message)  # Python picks the subclass by errno
    name = failure_string(exc)
    # Exactly a known string or the type's name: the message never leaks into it.
    assert name in KNOWN_FAILURES or name == f"unknown_failure: {type(exc).__name__}"
