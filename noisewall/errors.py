"""Errors shared across noisewall's packages."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user or a file (a policy, a capture, a scenario).

    The CLI prints such an error as one line and exits 1; its message names
    the file, and where it can the line and field.
    """
