"""The pattern table and modifiers against the text of the spec itself."""

from __future__ import annotations

import re

import pytest

from noisewall.noise.errors import PatternError, ProtocolNameError
from noisewall.noise.patterns import BASE_PATTERNS, HandshakePattern, parse_pattern
from noisewall.noise.protocol import parse_protocol_name
from tests.conftest import shared_file


def _spec_patterns() -> dict[str, HandshakePattern]:
    """Every pattern drawn in a table of noise.md, first occurrence of each name."""
    text = shared_file("specs/noise.md").read_text()
    bodies: dict[str, list[str]] = {}
    current: dict[int, str] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            if not line.startswith("+"):
                current = {}
            continue
        for column, raw_cell in enumerate(line.strip().strip("|").split("|")):
            cell = raw_cell.strip()
            heading = re.fullmatch(r"([A-Z][A-Z0-9]*[a-z0-9+]*):", cell)
            if heading:
                fresh = heading.group(1) not in bodies
                current[column] = heading.group(1) if fresh else ""
                if fresh:
                    bodies[heading.group(1)] = []
            elif current.get(column) and (cell[:2] in ("->", "<-") or cell == "..."):
                bodies[current[column]].append(cell)
    patterns = {}
    for name, lines in bodies.items():
        pre, messages = ([], lines)
        if "..." in lines:
            pre, messages = lines[: lines.index("...")], lines[lines.index("...") + 1 :]

        def tokens(side: str) -> tuple[str, ...]:
            return tuple(t.strip() for t in side[2:].split(",") if t.strip())

        patterns[name] = HandshakePattern(
            name,
            next((tokens(s) for s in pre if s.startswith("->")), ()),
            next((tokens(s) for s in pre if s.startswith("<-")), ()),
            tuple(tokens(m) for m in messages),
        )
    return patterns


SPEC = _spec_patterns()


def test_spec_tables_hold_59_patterns_38_of_them_base() -> None:
    assert len(SPEC) == 59
    assert sorted(n for n in SPEC if "psk" not in n) == sorted(BASE_PATTERNS)


@pytest.mark.parametrize("name", sorted(SPEC))
def test_pattern_matches_spec(name: str) -> None:
    # The psk patterns in the spec are worked examples: deriving them with the
    # modifier rules must give exactly what the spec draws.
    ours = parse_pattern(name)
    theirs = SPEC[name]
    assert (ours.initiator_pre, ours.responder_pre, ours.messages) == (
        theirs.initiator_pre, theirs.responder_pre, theirs.messages
    )


def test_xxfallback_is_bob_initiated_xx() -> None:
    pattern = parse_pattern("XXfallback")
    # Canonical form with Bob as initiator: Alice's "e" is the responder's pre-message.
    assert pattern.initiator_pre == ()
    assert pattern.responder_pre == ("e",)
    assert pattern.messages == (("e", "ee", "s", "se"), ("s", "es"))


def test_combined_psk_modifiers() -> None:
    pattern = parse_pattern("NNpsk0+psk2")
    assert pattern.messages == (("psk", "e"), ("e", "ee", "psk"))
    assert pattern.psk_count == 2
    assert parse_pattern("XXfallback+psk0").messages[0][0] == "psk"


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("Noise_XX_25519_AESGCM", "expected Noise_<pattern>"),
        ("Noise_QQ_25519_AESGCM_SHA256", "unknown handshake pattern 'QQ'"),
        ("Noise_XX_25518_AESGCM_SHA256", "unsupported DH function '25518'"),
        ("Noise_XX_25519_AES_SHA256", "unsupported cipher 'AES'"),
        ("Noise_XX_25519_AESGCM_MD5", "unsupported hash 'MD5'"),
        ("Noise_XXpsk2+psk0_25519_AESGCM_SHA256", "ascending order"),
        ("Noise_XXpsk4_25519_AESGCM_SHA256", "at least 4 messages"),
        ("Noise_IKfallback_25519_AESGCM_SHA256", "fallback needs a first message"),
        ("Noise_XXbogus_25519_AESGCM_SHA256", "unknown pattern modifier 'bogus'"),
        ("Noise_XX_25519_AES-GCM_SHA256", "may hold only"),
        ("Noise_" + "X" * 260 + "_25519_AESGCM_SHA256", "longer than 255"),
    ],
)
def test_bad_protocol_names_are_explained(name: str, needle: str) -> None:
    with pytest.raises(ProtocolNameError) as info:
        parse_protocol_name(name)
    assert needle in str(info.value)


def test_pattern_errors_are_value_errors() -> None:
    with pytest.raises(PatternError):
        parse_pattern("NNpsk0+psk0")
    assert issubclass(PatternError, ValueError)
