"""Forged DNS answers from query bytes (no sockets)."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from noisewall.censor.dnsforge import FORGED_TTL, Question, forge, question


def test_question_reads_name_and_type() -> None:
    query = dns.message.make_query("Chat.Example.", "AAAA").to_wire()
    assert question(query) == Question("chat.example", "AAAA")


@pytest.mark.parametrize("data", [b"", b"\x00" * 5, b"garbage" * 20])
def test_question_of_garbage_is_none(data: bytes) -> None:
    assert question(data) is None


def test_a_response_is_not_a_question() -> None:
    query = dns.message.make_query("chat.example", "A")
    assert question(dns.message.make_response(query).to_wire()) is None


def test_forge_answers_a_with_the_policy_address_under_the_query_id() -> None:
    query = dns.message.make_query("blocked.example", "A")
    response = dns.message.from_wire(forge(query.to_wire(), "203.0.113.99"))
    assert response.id == query.id and response.rcode() == dns.rcode.NOERROR
    assert response.question == query.question
    (rrset,) = response.answer
    assert [r.to_text() for r in rrset] == ["203.0.113.99"] and rrset.ttl == FORGED_TTL


def test_forge_gives_other_types_an_empty_answer() -> None:
    query = dns.message.make_query("blocked.example", "AAAA")
    response = dns.message.from_wire(forge(query.to_wire(), "203.0.113.99"))
    assert response.answer == [] and response.rcode() == dns.rcode.NOERROR
