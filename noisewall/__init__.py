"""noisewall: an open lab for encrypted messaging under a censoring firewall."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("noisewall")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
