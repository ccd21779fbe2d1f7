"""SOCKS5 (RFC 1928) CONNECT requests, sans-IO: parse what a client sent, build replies.

Only the no-authentication method and the CONNECT command are offered; who
may connect where is the server's decision (see the censor's and tunnel's
gateways), never this parser's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum

VERSION = 5
METHOD_NO_AUTH = 0x00
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04


class Reply(IntEnum):
    """RFC 1928 reply codes."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


class Socks5Error(Exception):
    """A malformed or unsupported SOCKS5 message; ``reply`` is the code to answer with."""

    def __init__(self, message: str, reply: Reply = Reply.GENERAL_FAILURE) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class ConnectRequest:
    """A CONNECT request: the destination host (IP literal or name) and port."""

    host: str
    port: int


def parse_greeting(data: bytes) -> tuple[list[int], int] | None:
    """The offered methods and the greeting's length, or None if incomplete."""
    if len(data) < 2:
        return None
    if data[0] != VERSION:
        raise Socks5Error(f"not SOCKS5 (version byte {data[0]})")
    count = data[1]
    if count == 0:
        raise Socks5Error("greeting offers no methods")
    if len(data) < 2 + count:
        return None
    return list(data[2 : 2 + count]), 2 + count


def method_reply(methods: list[int]) -> bytes:
    """The server's method selection: no-auth if offered, else none acceptable."""
    return bytes((VERSION, METHOD_NO_AUTH if METHOD_NO_AUTH in methods else METHOD_NONE_ACCEPTABLE))


def parse_request(data: bytes) -> tuple[ConnectRequest, int] | None:
    """The CONNECT request and its length, or None if incomplete."""
    if len(data) < 5:
        return None
    if data[0] != VERSION:
        raise Socks5Error(f"not SOCKS5 (version byte {data[0]})")
    if data[1] != CMD_CONNECT:
        raise Socks5Error(f"command {data[1]} not supported", Reply.COMMAND_NOT_SUPPORTED)
    atyp = data[3]
    if atyp == ATYP_IPV4:
        end = 4 + 4
        host = str(ipaddress.IPv4Address(data[4:end])) if len(data) >= end else ""
    elif atyp == ATYP_IPV6:
        end = 4 + 16
        host = str(ipaddress.IPv6Address(data[4:end])) if len(data) >= end else ""
    elif atyp == ATYP_DOMAIN:
        end = 5 + data[4]
        try:
            host = data[5:end].decode("ascii") if len(data) >= end else ""
        except UnicodeDecodeError:
            raise Socks5Error("domain name is not ASCII") from None
        if len(data) >= end and not host:
            raise Socks5Error("empty domain name")
    else:
        raise Socks5Error(f"address type {atyp} not supported", Reply.ADDRESS_TYPE_NOT_SUPPORTED)
    if len(data) < end + 2:
        return None
    return ConnectRequest(host, int.from_bytes(data[end : end + 2], "big")), end + 2


def reply(code: Reply, host: str = "0.0.0.0", port: int = 0) -> bytes:  # noqa: S104 - RFC's unspecified address
    """A reply to a CONNECT request with the bound address."""
    address = ipaddress.ip_address(host)
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return bytes((VERSION, code, 0, atyp)) + address.packed + port.to_bytes(2, "big")
