"""The lab network's one error type."""

from __future__ import annotations


class NetError(Exception):
    """The lab network cannot be made, found or used (not root, no ``ip``, not up, ...).

    Its message is one line meant for the user; the CLI prints it and exits 1.
    """
