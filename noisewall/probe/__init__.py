"""Per-feature probes of the messenger that write OONI-format measurements."""
