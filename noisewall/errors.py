"""Errors shared across noisewall's packages."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user or a file (a policy, a capture, a scenario).

    The CLI prints such an error as one line and exits 1; its message names
    the file, and where it can the line and field.
    """


class NetError(Exception):
    """The lab network cannot be made, found or used (not root, no ``ip``, not up, ...).

    Its message is one line meant for the user; the CLI prints it and exits 1. It lives
    here, not in ``noisewall.net``, so the CLI can catch it without importing that package.
    """
