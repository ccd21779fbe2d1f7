"""The server's filter lists and how a message is matched against them (sans-IO).

A keyword rule is a **combination**: a message matches when every one of its
terms appears in the text, in any order (after Unicode NFKC and case folding),
so a name alone passes and the name with "human rights lawyer" does not. An
image rule matches an image whose perceptual hash is within ``distance`` bits
of the listed one. Each rule applies to some scopes (one-to-one, group) and
during its time windows, so the lists change over a timeline.

All terms of all rules go into one Aho-Corasick automaton: a message is
scanned once, whatever the number of rules, and only the rules anchored on a
term that occurred are checked further.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import ahocorasick
import imagehash

from noisewall.records.keyword import SCOPES, Scope

__all__ = ["ALWAYS", "SCOPES", "FilterLists", "ImageRule", "KeywordRule", "Scope", "Window",
           "normalize"]


def normalize(text: str) -> str:
    """What terms and messages are compared as: NFKC, case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, until)`` in POSIX seconds (infinite ends when open)."""

    start: float = -math.inf
    until: float = math.inf

    def contains(self, now: float) -> bool:
        """True if ``now`` falls inside."""
        return self.start <= now < self.until


ALWAYS = (Window(),)


@dataclass(frozen=True)
class KeywordRule:
    """A keyword combination: every term must be present."""

    id: str
    terms: tuple[str, ...]
    scopes: frozenset[Scope]
    windows: tuple[Window, ...] = ALWAYS

    def active(self, scope: Scope, now: float) -> bool:
        """Whether the rule applies to a message in ``scope`` at ``now``."""
        return scope in self.scopes and any(w.contains(now) for w in self.windows)


@dataclass(frozen=True)
class ImageRule:
    """A listed image: anything within ``distance`` bits of ``phash`` matches."""

    id: str
    phash: imagehash.ImageHash
    distance: int
    scopes: frozenset[Scope]
    windows: tuple[Window, ...] = ALWAYS

    def active(self, scope: Scope, now: float) -> bool:
        """Whether the rule applies to a message in ``scope`` at ``now``."""
        return scope in self.scopes and any(w.contains(now) for w in self.windows)


class FilterLists:
    """Keyword combinations and image hashes, indexed for matching."""

    def __init__(self, keywords: Sequence[KeywordRule] = (),
                 images: Sequence[ImageRule] = ()) -> None:
        self.keywords = tuple(keywords)
        self.images = tuple(images)
        # Each rule is anchored on its first term: a rule can only match if that term occurs.
        self._anchored: dict[str, list[tuple[int, frozenset[str], KeywordRule]]] = {}
        self._automaton = ahocorasick.Automaton()
        for index, rule in enumerate(self.keywords):
            self._anchored.setdefault(rule.terms[0], []).append(
                (index, frozenset(rule.terms), rule))
            for term in rule.terms:
                if term not in self._automaton:
                    self._automaton.add_word(term, term)
        if self.keywords:
            self._automaton.make_automaton()

    def __len__(self) -> int:
        return len(self.keywords) + len(self.images)

    def match_text(self, text: str, scope: Scope, now: float) -> KeywordRule | None:
        """The first listed active combination all of whose terms are in ``text``, or None."""
        if not self.keywords:
            return None
        found = {term for _, term in self._automaton.iter(normalize(text))}
        first: tuple[int, KeywordRule] | None = None
        for term in found:
            for index, terms, rule in self._anchored.get(term, ()):
                if terms <= found and (first is None or index < first[0]) \
                        and rule.active(scope, now):
                    first = (index, rule)
        return None if first is None else first[1]

    def match_image(self, phash: imagehash.ImageHash, scope: Scope,
                    now: float) -> ImageRule | None:
        """The first active image rule within its distance of ``phash``, or None."""
        for rule in self.images:
            if rule.active(scope, now) and phash - rule.phash <= rule.distance:
                return rule
        return None
