"""What a probe measures and how: validated settings (pydantic v2)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from noisewall.records.endpoint import Endpoint
from noisewall.records.names import FEATURES, Feature


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Vantage(_Settings):
    """A path to the messenger: a label and the SOCKS5 proxy in front of it (None: direct).

    Labels in use: ``direct`` (the user's own, possibly censored, network),
    ``control`` (an uncensored path measured in the same round), and the
    tunnel transports (``tunnel-tls``, ``tunnel-random``,
    ``tunnel-noisesocket-padded``); any label is allowed.
    """

    label: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    socks5: Endpoint | None = None


class SampleSizes(_Settings):
    """Bytes of the fixed sample each bulk feature moves.

    A bulk transfer must outlast a policer's burst (the censor's token bucket
    holds 50 ms of its rate, at least 1500 bytes), so a few KiB already show a
    128 kbit/s throttle; larger samples give steadier figures but slower rounds.
    """

    text: int = Field(default=8 * 1024, ge=16, le=512 * 1024)
    photo: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    video: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    voice: int = Field(default=32 * 1024, ge=1024, le=16 * 1024 * 1024)


class ProbeSettings(_Settings):
    """Everything a :class:`~noisewall.probe.prober.Prober` needs besides a clock and a folder.

    ``setup_socks5`` is the path used for everything that is not a
    measurement: registering the probe accounts and the probe peer, the
    peer's own connection, and fetching media credentials each round (so a
    blocked chat channel does not mask the media path's own state). It
    should be uncensored; None means a direct connection.
    """

    server: Endpoint
    media_url: str | None = Field(default=None, pattern=r"^https://")
    features: tuple[Feature, ...] = FEATURES
    vantages: tuple[Vantage, ...] = (Vantage(label="direct"),)
    setup_socks5: Endpoint | None = None
    tcp_endpoints: tuple[Endpoint, ...] = ()
    framing: Literal["noisesocket", "wa"] = "noisesocket"
    connect_timeout: float = Field(default=2.0, gt=0, le=120)
    phase_timeout: float = Field(default=2.0, gt=0, le=120)
    transfer_timeout: float = Field(default=10.0, gt=0, le=600)
    samples: SampleSizes = SampleSizes()
    account_prefix: str = Field(default="probe", pattern=r"^[a-z0-9][a-z0-9-]{0,11}$")
    probe_asn: str = Field(default="AS0", pattern=r"^AS[0-9]+$")
    probe_cc: str = Field(default="ZZ", pattern=r"^[A-Z]{2}$")
    probe_ip: str = "127.0.0.1"
    probe_network_name: str | None = None

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: tuple[Feature, ...]) -> tuple[Feature, ...]:
        if not value:
            raise ValueError("at least one feature")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _unique_labels(self) -> ProbeSettings:
        labels = [v.label for v in self.vantages]
        if not labels:
            raise ValueError("at least one vantage")
        if len(set(labels)) != len(labels):
            raise ValueError(f"vantage labels must be unique: {labels}")
        return self
