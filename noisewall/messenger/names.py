"""Account names: one canonical spelling each, so two accounts never print alike.

A name in a messenger's key directory is what a user checks before trusting a
key, so any two names that look the same must be the same account. The rules
(docs/messenger.md, "Account names"):

* the name is normalised with Unicode NFKC, then lower-cased: ``BOB``, the
  full-width ``bob`` (U+FF42 U+FF4F U+FF42) and ``bob`` are one account, ``bob``;
* the result must be, in full, 1-32 of ``a-z 0-9 _ . -``, starting with a
  letter or digit. Anything else is refused, never stripped or repaired: a
  trailing newline or space, zero-width and bidirectional-control characters,
  letters of other scripts that only look Latin (a Cyrillic o, U+043E).

The server applies the same function where a name comes in (``register``) and
where one is looked up (``fetch_bundle``, ``send``), so a look-alike can
neither be registered nor reach anyone but the canonical account.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from noisewall.messenger.wire import NAME_PATTERN, WireError, require_str

#: Unicode categories that print as nothing or as blank: controls, format
#: characters (zero-width joiners, bidi overrides), separators, unassigned.
_INVISIBLE_CATEGORIES = ("C", "Z")


class InvalidNameError(ValueError):
    """A string that is not an account name; the message says which rule it breaks."""


def canonical_name(raw: str) -> str:
    """The canonical account name ``raw`` denotes; :class:`InvalidNameError` if none."""
    for index, char in enumerate(raw):
        if unicodedata.category(char).startswith(_INVISIBLE_CATEGORIES):
            raise InvalidNameError(
                f"a name may not contain spaces, control or invisible characters "
                f"(U+{ord(char):04X} at position {index})")
    name = unicodedata.normalize("NFKC", raw).lower()
    for char in name:
        if not char.isascii():
            raise InvalidNameError(
                f"a name uses only a-z, 0-9, '_', '.' and '-' (U+{ord(char):04X} "
                f"{unicodedata.name(char, 'unnamed')} is not one of them)")
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidNameError(
            "a name is 1-32 of a-z, 0-9, '_', '.', '-', starting with a letter or digit")
    return name


def require_name(message: dict[str, Any], key: str) -> str:
    """The canonical account name in field ``key``; :class:`WireError` (``bad_request``) if none."""
    try:
        return canonical_name(require_str(message, key))
    except InvalidNameError as exc:
        raise WireError("bad_request", f"field {key!r}: {exc}") from None
