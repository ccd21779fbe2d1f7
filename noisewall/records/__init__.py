"""What the packages share: the names of features and transports, endpoints, and the
noisewall measurement record (OONI's base data format with noisewall's test keys).

The probe writes measurements with :mod:`.measurement`, the observatory
validates them with it, the lab and the tunnel name features and transports
with :mod:`.names`; nothing here does I/O.
"""
