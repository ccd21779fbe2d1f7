"""The observatory: store OONI-format measurements, detect blocking events, report them."""
