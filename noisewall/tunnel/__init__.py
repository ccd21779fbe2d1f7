"""Circumvention: a VPN-style tunnel with pluggable transports (tls, random, noisesocket-padded)."""
