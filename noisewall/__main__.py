"""``python -m noisewall`` is the ``noisewall`` command."""

from noisewall.cli import main

main()
