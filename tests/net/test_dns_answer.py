"""The lab resolver's answers, bytes in and bytes out."""

from __future__ import annotations

import ipaddress

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given
from hypothesis import strategies as st

from noisewall.net.dns_answer import TTL, answer

HOSTS = {"chat.lab": ipaddress.IPv4Address("203.0.113.10")}


def ask(name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    response = answer(query.to_wire(), HOSTS)
    assert response is not None
    message = dns.message.from_wire(response)
    assert message.id == query.id and message.flags & dns.flags.QR
    return message


def test_a_lab_name_gets_its_address_authoritatively() -> None:
    message = ask("chat.lab")
    assert message.rcode() == dns.rcode.NOERROR and message.flags & dns.flags.AA
    (rrset,) = message.answer
    assert [r.address for r in rrset] == ["203.0.113.10"] and rrset.ttl == TTL


def test_names_match_whatever_their_case() -> None:
    assert ask("CHAT.Lab.").answer[0][0].address == "203.0.113.10"


def test_other_types_of_a_lab_name_are_empty_not_missing() -> None:
    message = ask("chat.lab", "AAAA")
    assert message.rcode() == dns.rcode.NOERROR and not message.answer


def test_any_other_name_does_not_exist() -> None:
    for name in ("example.com", "sub.chat.lab", "lab"):
        message = ask(name)
        assert message.rcode() == dns.rcode.NXDOMAIN and not message.answer


def test_a_response_is_never_answered() -> None:
    query = dns.message.make_query("chat.lab", "A")
    response = answer(query.to_wire(), HOSTS)
    assert response is not None
    assert answer(response, HOSTS) is None


def test_garbage_after_a_header_gets_format_error_with_the_id() -> None:
    response = answer(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff", HOSTS)
    assert response is not None
    assert response[:2] == b"\x12\x34" and response[2] & 0x80 and response[3] & 0x0F == 1


@given(st.binary(max_size=300))
def test_any_bytes_give_a_response_or_nothing_never_an_exception(data: bytes) -> None:
    response = answer(data, HOSTS)
    assert response is None or len(response) >= 12
