"""Server state that only the server's own user may read.

The chat database, the media blobs and the key files are nobody else's
business, so they are created with the least permissions they need: folders
0700, files 0600. The modes are given at creation (not fixed up afterwards),
so there is no moment at which another user could open them.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a folder, created with mode 0700 (its missing parents too) if absent.

    An existing folder keeps its mode: it may be one the operator shares on
    purpose (``--data .``); what the server writes inside is private anyway.
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file of mode 0600: created empty if absent, tightened if it exists.

    For files another library opens afterwards (SQLite, which gives its WAL
    and shared-memory files the mode of the database file).
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
    finally:
        os.close(descriptor)
    return path


def create_private(path: Path) -> int:
    """Create ``path`` exclusively with mode 0600; returns a descriptor open for writing."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
