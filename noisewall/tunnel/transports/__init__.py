"""The tunnel's transports: how its Noise session looks on the wire.

:mod:`~noisewall.tunnel.transports.base` holds the interface every transport
implements and the quiet refusal the non-TLS ones share;
:mod:`~noisewall.tunnel.transports.tls` (TLS 1.3 camouflage with a channel
binding), :mod:`~noisewall.tunnel.transports.random_bytes` (uniformly random
from the first byte) and :mod:`~noisewall.tunnel.transports.padded`
(printable-prefixed, padded NoiseSocket) are the three transports.
"""
