"""The tunnel's key files: a static key created on first use, and client allow-list files."""

from __future__ import annotations

from pathlib import Path

from noisewall.noise.dh import KeyPair, dh_function
from noisewall.noise.keys import load_or_create_private_key, parse_hex_key
from noisewall.tunnel.config import KEY_SIZE, TunnelConfigError


def load_or_create_key(path: Path) -> KeyPair:
    """The X25519 key pair in ``path`` (hex private key), created with mode 0600 if missing."""
    return load_or_create_private_key(path, dh_function("25519"))


def read_client_keys(path: Path) -> list[bytes]:
    """Client public keys from ``path``: one hex key per line, ``#`` starts a comment."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TunnelConfigError(f"cannot read client keys from {path}: {exc}") from None
    keys = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            keys.append(parse_hex_key(text, KEY_SIZE, f"{path}:{number}: client key"))
    return keys
