"""The lab resolver's decisions, sans IO: a DNS query's bytes in, the response's bytes out.

Authoritative for the lab's names and nothing else: an ``A`` question for a
declared name gets its address, any other type for it an empty answer
(NODATA, so that clients asking ``AAAA`` alongside ``A`` go on with the
``A``), and every other name NXDOMAIN. Nothing is ever forwarded: the lab has
no way out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 30
"""Seconds clients may cache an answer: short, since a scenario may move a name."""


def answer(query: bytes, hosts: Mapping[str, ipaddress.IPv4Address]) -> bytes | None:
    """The response to ``query``, or None when it is not a DNS query worth answering."""
    try:
        message = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return _format_error(query)
    if message.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(message)
    response.flags |= dns.flags.AA
    if message.opcode() != dns.opcode.QUERY or len(message.question) != 1:
        response.set_rcode(dns.rcode.NOTIMP if message.opcode() != dns.opcode.QUERY
                           else dns.rcode.FORMERR)
        return response.to_wire()
    question = message.question[0]
    name = question.name.to_text(omit_final_dot=True).lower()
    address = hosts.get(name)
    if address is None or question.rdclass != dns.rdataclass.IN:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(question.name, TTL, "IN", "A", str(address)))
    return response.to_wire()


def _format_error(query: bytes) -> bytes | None:
    """FORMERR echoing the query's id and a cleared question, if its header is readable."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    header = query[:2] + bytes([0x80 | (query[2] & 0x79), dns.rcode.FORMERR]) + bytes(8)
    return header
