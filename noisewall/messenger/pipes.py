"""Noise Pipes as the messenger runs it: the three protocol names and each side's settings.

A module of its own so that a client (which needs only the initiator's side)
does not import the server and what the server needs.
"""

from __future__ import annotations

from noisewall.noise import KeyPair, NoiseSettings
from noisewall.noise.stream import Framing

XX = "Noise_XX_25519_AESGCM_SHA256"
IK = "Noise_IK_25519_AESGCM_SHA256"
XX_FALLBACK = "Noise_XXfallback_25519_AESGCM_SHA256"


def server_settings(static: KeyPair) -> NoiseSettings:
    """Noise Pipes as a responder: XX or IK, switching IK to XXfallback on a stale key."""
    return NoiseSettings(protocol=XX, static=static, accept=[IK], fallbacks={IK: XX_FALLBACK})


def client_settings(static: KeyPair, server_key: bytes | None,
                    framing: Framing = "noisesocket") -> NoiseSettings:
    """Noise Pipes as an initiator: IK with a cached server key (XXfallback if stale), else XX.

    The WA framing carries no negotiation, so there is no way to switch to
    XXfallback: over WA the client always runs XX.
    """
    if server_key is None or framing == "wa":
        return NoiseSettings(protocol=XX, static=static)
    return NoiseSettings(protocol=IK, static=static, remote_static=server_key,
                         accept=[XX_FALLBACK])
