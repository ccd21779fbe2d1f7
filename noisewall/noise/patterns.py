"""Noise handshake patterns (spec sections 7, 9 and 10.2), their modifiers and validity rules.

Patterns are kept in canonical (Alice-initiated) form: message ``i`` is sent by
the initiator when ``i`` is even. The 38 base patterns below are transcribed
from the spec's tables; PSK and fallback variants are derived by the modifier
rules, and every derived pattern is checked against the validity rules of
sections 7.3 and 9.3 before use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from noisewall.noise.errors import PatternError

#: The DH tokens, named by (initiator key, responder key).
DH_TOKENS = frozenset({"ee", "es", "se", "ss"})
TOKENS = DH_TOKENS | {"e", "s", "psk"}

# One line a pattern, in the spec's own notation: pre-messages, "...", messages.
_BASE_PATTERNS = """
N: <- s | ... | -> e, es
K: -> s | <- s | ... | -> e, es, ss
X: <- s | ... | -> e, es, s, ss
NN: -> e | <- e, ee
KN: -> s | ... | -> e | <- e, ee, se
NK: <- s | ... | -> e, es | <- e, ee
KK: -> s | <- s | ... | -> e, es, ss | <- e, ee, se
NX: -> e | <- e, ee, s, es
KX: -> s | ... | -> e | <- e, ee, se, s, es
XN: -> e | <- e, ee | -> s, se
IN: -> e, s | <- e, ee, se
XK: <- s | ... | -> e, es | <- e, ee | -> s, se
IK: <- s | ... | -> e, es, s, ss | <- e, ee, se
XX: -> e | <- e, ee, s, es | -> s, se
IX: -> e, s | <- e, ee, se, s, es
NK1: <- s | ... | -> e | <- e, ee, es
NX1: -> e | <- e, ee, s | -> es
X1N: -> e | <- e, ee | -> s | <- se
X1K: <- s | ... | -> e, es | <- e, ee | -> s | <- se
XK1: <- s | ... | -> e | <- e, ee, es | -> s, se
X1K1: <- s | ... | -> e | <- e, ee, es | -> s | <- se
X1X: -> e | <- e, ee, s, es | -> s | <- se
XX1: -> e | <- e, ee, s | -> es, s, se
X1X1: -> e | <- e, ee, s | -> es, s | <- se
K1N: -> s | ... | -> e | <- e, ee | -> se
K1K: -> s | <- s | ... | -> e, es | <- e, ee | -> se
KK1: -> s | <- s | ... | -> e | <- e, ee, se, es
K1K1: -> s | <- s | ... | -> e | <- e, ee, es | -> se
K1X: -> s | ... | -> e | <- e, ee, s, es | -> se
KX1: -> s | ... | -> e | <- e, ee, se, s | -> es
K1X1: -> s | ... | -> e | <- e, ee, s | -> se, es
I1N: -> e, s | <- e, ee | -> se
I1K: <- s | ... | -> e, es, s | <- e, ee | -> se
IK1: <- s | ... | -> e, s | <- e, ee, se, es
I1K1: <- s | ... | -> e, s | <- e, ee, es | -> se
I1X: -> e, s | <- e, ee, s, es | -> se
IX1: -> e, s | <- e, ee, se, s | -> es
I1X1: -> e, s | <- e, ee, s | -> se, es
"""

Tokens = tuple[str, ...]


@dataclass(frozen=True)
class HandshakePattern:
    """A handshake pattern in canonical form.

    ``messages[i]`` is sent by the initiator when ``i`` is even, by the
    responder when odd.
    """

    name: str
    initiator_pre: Tokens
    responder_pre: Tokens
    messages: tuple[Tokens, ...]

    @property
    def one_way(self) -> bool:
        """True for the one-way patterns (N, K, X and their PSK variants)."""
        return len(self.messages) == 1

    @property
    def psk_count(self) -> int:
        """How many PSKs the handshake consumes."""
        return sum(message.count("psk") for message in self.messages)

    @lru_cache(maxsize=1024)  # noqa: B019 - patterns are few, immutable and long-lived
    def uses_static(self, initiator: bool) -> bool:
        """True if this role's static key pair is needed (pre-message, sent, or in a DH)."""
        if "s" in (self.initiator_pre if initiator else self.responder_pre):
            return True
        side = 0 if initiator else 1
        for index, message in enumerate(self.messages):
            if (index % 2 == 0) == initiator and "s" in message:
                return True
            if any(token in DH_TOKENS and token[side] == "s" for token in message):
                return True
        return False


def _parse_side(text: str) -> tuple[bool, Tokens]:
    arrow, _, rest = text.strip().partition(" ")
    if arrow not in ("->", "<-"):
        raise PatternError(f"bad pattern line {text!r}")
    tokens = tuple(token.strip() for token in rest.split(",") if token.strip())
    return arrow == "->", tokens


def _parse_base_table(table: str) -> dict[str, HandshakePattern]:
    patterns: dict[str, HandshakePattern] = {}
    for line in table.strip().splitlines():
        name, _, body = line.partition(":")
        parts = [part.strip() for part in body.split("|")]
        if "..." in parts:
            split_at = parts.index("...")
            pre, lines = parts[:split_at], parts[split_at + 1 :]
        else:
            pre, lines = [], parts
        initiator_pre: Tokens = ()
        responder_pre: Tokens = ()
        for side in pre:
            from_initiator, tokens = _parse_side(side)
            if from_initiator:
                initiator_pre = tokens
            else:
                responder_pre = tokens
        messages = tuple(_parse_side(side)[1] for side in lines)
        patterns[name] = HandshakePattern(name, initiator_pre, responder_pre, messages)
    return patterns


BASE_PATTERNS: dict[str, HandshakePattern] = _parse_base_table(_BASE_PATTERNS)

_PATTERN_SECTION = re.compile(r"^([A-Z][A-Z0-9]*)([a-z][a-z0-9]*(?:\+[a-z][a-z0-9]*)*)?$")
_PSK_MODIFIER = re.compile(r"^psk([0-9]+)$")
_SWAP_DH = {"es": "se", "se": "es"}


def _apply_psk(pattern: HandshakePattern, position: int) -> HandshakePattern:
    messages = [list(message) for message in pattern.messages]
    if position == 0:
        messages[0].insert(0, "psk")
    elif position <= len(messages):
        messages[position - 1].append("psk")
    else:
        raise PatternError(
            f"psk{position} needs a handshake of at least {position} messages; "
            f"{pattern.name} has {len(messages)}"
        )
    return HandshakePattern(
        pattern.name, pattern.initiator_pre, pattern.responder_pre,
        tuple(tuple(message) for message in messages),
    )


def _apply_fallback(pattern: HandshakePattern) -> HandshakePattern:
    # Alice's first message becomes her pre-message; Bob now sends first, so in
    # canonical form Bob is the initiator: sides swap and es/se trade places.
    if len(pattern.messages) < 2:
        raise PatternError(f"fallback cannot apply to one-way pattern {pattern.name}")
    first = pattern.messages[0]
    if first not in (("e",), ("s",), ("e", "s")):
        raise PatternError(
            f"fallback needs a first message of 'e', 's' or 'e, s'; {pattern.name} "
            f"sends {', '.join(first)}"
        )
    alice_pre = pattern.initiator_pre + first
    messages = tuple(
        tuple(_SWAP_DH.get(token, token) for token in message) for message in pattern.messages[1:]
    )
    return HandshakePattern(pattern.name, pattern.responder_pre, alice_pre, messages)


def _check_pre_message(tokens: Tokens, pattern_name: str) -> None:
    if tokens not in ((), ("e",), ("s",), ("e", "s")):
        raise PatternError(f"{pattern_name}: invalid pre-message {', '.join(tokens)}")


def check_validity(pattern: HandshakePattern) -> None:
    """Raise :class:`PatternError` unless ``pattern`` meets spec sections 7.3 and 9.3."""
    _check_pre_message(pattern.initiator_pre, pattern.name)
    _check_pre_message(pattern.responder_pre, pattern.name)
    # sent[role] = set of keys ("e", "s") that role has made public so far.
    sent: dict[bool, set[str]] = {
        True: set(pattern.initiator_pre),
        False: set(pattern.responder_pre),
    }
    done_dh: set[str] = set()
    psk_seen = False

    def check_may_encrypt(initiator: bool, where: str) -> None:
        who = "initiator" if initiator else "responder"
        rules = (("se", "ee"), ("ss", "es")) if initiator else (("es", "ee"), ("ss", "se"))
        for after, needs in rules:
            if after in done_dh and needs not in done_dh:
                raise PatternError(
                    f"{pattern.name}: {who} encrypts {where} after '{after}' "
                    f"without '{needs}' (spec 7.3 rule 4)"
                )
        if psk_seen and "e" not in sent[initiator]:
            raise PatternError(
                f"{pattern.name}: {who} encrypts {where} after a psk without having sent "
                "an ephemeral key (spec 9.3)"
            )

    for index, message in enumerate(pattern.messages):
        initiator = index % 2 == 0
        for token in message:
            if token not in TOKENS:
                raise PatternError(f"{pattern.name}: unknown token {token!r}")
            if token in ("e", "s"):
                if token in sent[initiator]:
                    raise PatternError(f"{pattern.name}: '{token}' sent twice by one party")
                if token == "s" and (done_dh or psk_seen):
                    check_may_encrypt(initiator, "its static key")
                sent[initiator].add(token)
            elif token == "psk":
                psk_seen = True
            else:
                if token in done_dh:
                    raise PatternError(f"{pattern.name}: DH '{token}' performed twice")
                if token[0] not in sent[True] or token[1] not in sent[False]:
                    raise PatternError(
                        f"{pattern.name}: DH '{token}' uses a key not yet exchanged"
                    )
                done_dh.add(token)
        check_may_encrypt(initiator, f"the payload of message {index + 1}")
    check_may_encrypt(True, "transport messages")
    if not pattern.one_way:
        check_may_encrypt(False, "transport messages")


@lru_cache(maxsize=256)
def parse_pattern(section: str) -> HandshakePattern:
    """Build the pattern named by a protocol name's pattern section (``XXfallback+psk0``)."""
    match = _PATTERN_SECTION.match(section)
    if match is None:
        raise PatternError(f"malformed handshake pattern name {section!r}")
    base_name, modifier_text = match.group(1), match.group(2) or ""
    try:
        pattern = BASE_PATTERNS[base_name]
    except KeyError:
        raise PatternError(f"unknown handshake pattern {base_name!r}") from None
    modifiers = modifier_text.split("+") if modifier_text else []
    if len(set(modifiers)) != len(modifiers):
        raise PatternError(f"{section}: a modifier is repeated")
    psk_positions: list[int] = []
    for modifier in modifiers:
        psk = _PSK_MODIFIER.match(modifier)
        if psk is not None:
            psk_positions.append(int(psk.group(1)))
            pattern = _apply_psk(pattern, int(psk.group(1)))
        elif modifier == "fallback":
            if psk_positions:
                raise PatternError(f"{section}: fallback must come before psk modifiers")
            pattern = _apply_fallback(pattern)
        else:
            raise PatternError(f"{section}: unknown pattern modifier {modifier!r}")
    if psk_positions != sorted(psk_positions):
        raise PatternError(f"{section}: psk modifiers must be in ascending order (spec 8.1)")
    pattern = HandshakePattern(section, pattern.initiator_pre, pattern.responder_pre,
                               pattern.messages)
    check_validity(pattern)
    return pattern
