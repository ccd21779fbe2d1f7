"""The literals every layer names: messenger features and circumvention transports."""

from __future__ import annotations

from typing import Literal, TypeAlias

Feature: TypeAlias = Literal["text", "photo", "video", "voice", "location", "register", "tcp"]
FEATURES: tuple[Feature, ...] = ("text", "photo", "video", "voice", "location", "register", "tcp")
MEDIA_FEATURES: tuple[Feature, ...] = ("photo", "video", "voice")
#: Features whose measurement has a bulk phase, hence a throughput.
BULK_FEATURES: tuple[Feature, ...] = ("text", *MEDIA_FEATURES)

TransportName: TypeAlias = Literal["tls", "random", "noisesocket-padded"]
TRANSPORT_NAMES: tuple[TransportName, ...] = ("tls", "random", "noisesocket-padded")
