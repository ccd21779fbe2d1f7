"""Safety numbers: what two people compare to know their messages reach each other's keys.

Signal's numeric fingerprint (libsignal's ``NumericFingerprintGenerator``,
5,200 iterations): for each party, start from the 2-byte version 0, the
identity public key (Signal's 33-byte form, a 0x05 type byte and the
Curve25519 key) and the account name, then 5,200 times replace it with the
SHA-512 of itself and the key; the first 30 bytes, as six 5-byte big-endian
numbers modulo 100,000, give 30 digits. A pair's safety
number is both parties' 30 digits, the smaller first, so both ends show the
same 60 digits. The iterations make a key whose number collides with a given
one cost 5,200 times more to search for.
"""

from __future__ import annotations

import hashlib
import hmac

ITERATIONS = 5200
DIGITS = 60
_VERSION = (0).to_bytes(2, "big")
_CURVE25519_KEY_TYPE = b"\x05"


def party_digits(account: str, identity_key: bytes) -> str:
    """One party's 30 digits (half of a safety number)."""
    key = _CURVE25519_KEY_TYPE + identity_key
    digest = _VERSION + key + account.encode("utf-8")
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    return "".join(f"{int.from_bytes(digest[i:i + 5], 'big') % 100_000:05d}"
                   for i in range(0, 30, 5))


def safety_number(local: tuple[str, bytes], remote: tuple[str, bytes]) -> str:
    """The 60-digit safety number of two ``(account, identity_key)`` parties (order-free)."""
    return "".join(sorted((party_digits(*local), party_digits(*remote))))


def format_safety_number(number: str) -> str:
    """Twelve groups of five digits, as Signal shows them."""
    return " ".join(number[i:i + 5] for i in range(0, len(number), 5))


def parse_safety_number(text: str) -> str:
    """The digits of a typed safety number (spaces allowed); ValueError if not 60 digits."""
    digits = "".join(text.split())
    if len(digits) != DIGITS or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"a safety number is {DIGITS} digits")
    return digits


def same_safety_number(a: str, b: str) -> bool:
    """Whether two safety numbers (digits only) are equal, in constant time."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))
