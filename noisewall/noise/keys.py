"""Reading keys from files and command-line hex; creating a key file on first use."""

from __future__ import annotations

import os
from pathlib import Path

from noisewall.noise.dh import DHFunction, KeyPair
from noisewall.noise.errors import InvalidKeyError
from noisewall.private_files import create_private


def parse_hex_key(text: str, length: int, what: str) -> bytes:
    """Decode a hex key of exactly ``length`` bytes, naming ``what`` in errors."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidKeyError(f"{what} is not valid hex") from None
    if len(key) != length:
        raise InvalidKeyError(f"{what} must be {length} bytes ({2 * length} hex digits)")
    return key


def load_private_key(path: Path, dh: DHFunction) -> KeyPair:
    """Load a key pair from a file holding the hex private key (first line)."""
    try:
        text = path.read_text(encoding="ascii").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidKeyError(f"cannot read key file {path}: {exc}") from None
    if not text:
        raise InvalidKeyError(f"key file {path} is empty")
    return dh.keypair_from_private(parse_hex_key(text[0], dh.privlen, f"key file {path}"))


def load_or_create_private_key(path: Path, dh: DHFunction) -> KeyPair:
    """The key pair in ``path``; a new one written there first (hex, mode 0600) if missing.

    The file is created exclusively, so two processes starting at once cannot
    each write a key and use different ones: the loser reads the winner's.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pair = dh.generate_keypair()
        try:
            descriptor = create_private(path)
        except FileExistsError:
            return load_private_key(path, dh)
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(pair.private_bytes().hex() + "\n")
    return load_private_key(path, dh)
