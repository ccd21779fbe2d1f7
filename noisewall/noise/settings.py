"""The keys and options a party brings to a Noise connection."""

from __future__ import annotations

from dataclasses import dataclass, field

from noisewall.noise.dh import KeyPair
from noisewall.noise.handshakestate import HandshakeState
from noisewall.noise.protocol import NoiseProtocol, parse_protocol_name


@dataclass
class NoiseSettings:
    """Everything one party needs to run handshakes, whatever protocol is negotiated.

    ``protocol`` is the initial protocol (the initiator's choice; for a
    responder, the one it expects). ``accept`` lists further protocols a
    NoiseSocket responder accepts as initial, or an initiator accepts in a
    switch or retry. ``fallbacks`` maps an initial protocol to the fallback a
    responder switches to when it cannot read the first message (Noise Pipes:
    IK -> XXfallback). ``retry_with`` is the protocol a responder asks for
    when the initial one is not acceptable. ``padding`` pads every encrypted
    NoiseSocket body to a multiple of that many bytes (0: no padding).
    ``static`` and ``psks`` never appear in ``repr``.
    """

    protocol: str = "Noise_XX_25519_AESGCM_SHA256"
    static: KeyPair | None = field(default=None, repr=False)
    remote_static: bytes | None = None
    psks: list[bytes] = field(default_factory=list, repr=False)
    prologue: bytes = b""
    padding: int = 0
    accept: list[str] = field(default_factory=list)
    fallbacks: dict[str, str] = field(default_factory=dict)
    retry_with: str | None = None
    #: NoiseSocket initial negotiation data to send instead of the protocol name; a
    #: responder reads exactly these bytes as naming ``protocol``.
    negotiation_data: bytes | None = None
    #: A fixed ephemeral key pair, only to reproduce test vectors; leave None.
    ephemeral: KeyPair | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Validate every name up front so a typo fails at configuration time.
        for name in [self.protocol, *self.accept, *self.fallbacks, *self.fallbacks.values()]:
            parse_protocol_name(name)
        if self.retry_with is not None:
            parse_protocol_name(self.retry_with)
        if not 0 <= self.padding <= 65535:
            raise ValueError("padding must be between 0 and 65535")

    def acceptable(self, name: str) -> bool:
        """True if ``name`` is the configured protocol or listed in ``accept``."""
        return name == self.protocol or name in self.accept

    def handshake(
        self, protocol: NoiseProtocol | str, initiator: bool, prologue: bytes
    ) -> HandshakeState:
        """A HandshakeState for ``protocol`` with the keys its pattern needs."""
        if isinstance(protocol, str):
            protocol = parse_protocol_name(protocol)
        pattern = protocol.pattern
        remote_pre = pattern.responder_pre if initiator else pattern.initiator_pre
        return HandshakeState(
            protocol,
            initiator,
            prologue,
            s=self.static if pattern.uses_static(initiator) else None,
            e=self.ephemeral,
            rs=self.remote_static if "s" in remote_pre else None,
            psks=self.psks[: pattern.psk_count],
        )
