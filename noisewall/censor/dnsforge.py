"""Forged DNS answers, as the GFW's injector gives them (sans-IO: bytes in, bytes out).

:func:`question` reads a query's name and type; :func:`forge` builds the
answer the censor sends instead of the resolver's: the query's own ID and
question, an ``A`` record with the policy's address, and for any other type
an empty answer (so a client that asks ``AAAA`` beside ``A`` goes on with
the forged ``A``).
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset

#: Seconds a forged answer may be cached (the injector's answers carry a short TTL too).
FORGED_TTL = 60


@dataclass(frozen=True)
class Question:
    """The name (lower case, no trailing dot) and type a query asks about."""

    name: str
    type: str


def question(query: bytes) -> Question | None:
    """The first question of a DNS query, or None if ``query`` is not one."""
    try:
        message = dns.message.from_wire(query)
    except (dns.exception.DNSException, ValueError):
        return None
    if message.flags & dns.flags.QR or not message.question:
        return None
    asked = message.question[0]
    return Question(asked.name.to_text(omit_final_dot=True).lower(),
                    dns.rdatatype.to_text(asked.rdtype))


def forge(query: bytes, address: str) -> bytes:
    """A response to ``query`` that says its name is at ``address`` (IPv4)."""
    message = dns.message.from_wire(query)
    response = dns.message.make_response(message)
    response.flags |= dns.flags.RA
    asked = message.question[0]
    if asked.rdtype == dns.rdatatype.A:
        response.answer.append(dns.rrset.from_text(
            asked.name, FORGED_TTL, dns.rdataclass.IN, dns.rdatatype.A, address))
    return response.to_wire()
