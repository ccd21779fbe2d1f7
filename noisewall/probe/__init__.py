"""Per-feature probes of the messenger that write OONI-format measurements.

Public API: :class:`~noisewall.probe.prober.Prober` (async context manager,
``run_round``), :class:`~noisewall.probe.settings.ProbeSettings`,
:class:`~noisewall.probe.settings.Vantage`, :class:`~noisewall.probe.settings.SampleSizes`
and :func:`~noisewall.probe.failures.failure_string`. Format: ``docs/measurements.md``.
"""

from noisewall.probe.failures import failure_string
from noisewall.probe.prober import Prober
from noisewall.probe.settings import ProbeSettings, SampleSizes, Vantage
from noisewall.records.names import FEATURES

__all__ = ["FEATURES", "ProbeSettings", "Prober", "SampleSizes", "Vantage", "failure_string"]
