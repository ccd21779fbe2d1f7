"""The HandshakeState object (spec section 5.3), with PSK (section 9) and fallback (10.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from noisewall.noise.ciphers import TAGLEN
from noisewall.noise.cipherstate import MAX_MESSAGE_LEN, CipherState
from noisewall.noise.dh import KeyPair
from noisewall.noise.errors import (
    DecryptError,
    HandshakeStateError,
    InvalidKeyError,
    MessageTooLongError,
    NoiseError,
)
from noisewall.noise.protocol import NoiseProtocol, parse_protocol_name
from noisewall.noise.symmetricstate import SymmetricState

PSK_LEN = 32


@dataclass(frozen=True)
class MessageLayout:
    """What one handshake message holds besides its payload.

    ``overhead`` is the byte count of its key tokens; ``payload_encrypted``
    tells whether the payload goes through the AEAD (NoiseSocket frames
    encrypted payloads differently from cleartext ones).
    """

    overhead: int
    payload_encrypted: bool


@dataclass
class Transport:
    """The CipherStates a completed handshake leaves to this party.

    One-way patterns leave only ``send`` to the initiator and only ``receive``
    to the responder.
    """

    send: CipherState | None
    receive: CipherState | None
    handshake_hash: bytes
    remote_static: bytes | None


@lru_cache(maxsize=512)
def _layouts(protocol: NoiseProtocol) -> tuple[MessageLayout, ...]:
    # Whether k is set depends only on the pattern: DH and psk tokens set it,
    # and so does "e" in a PSK handshake (spec 9.2).
    pattern = protocol.pattern
    publen = protocol.dh.publen
    psk_mode = pattern.psk_count > 0
    has_key = False
    layouts: list[MessageLayout] = []
    for message in pattern.messages:
        overhead = 0
        for token in message:
            if token == "e":
                overhead += publen
                has_key = has_key or psk_mode
            elif token == "s":
                overhead += publen + (TAGLEN if has_key else 0)
            else:
                has_key = True
        layouts.append(MessageLayout(overhead, has_key))
    return tuple(layouts)


class HandshakeState:
    """A Noise handshake in progress for one party (sans-IO).

    ``s``: the local static key pair; ``rs``: the remote static public key,
    when the pattern has it as a pre-message; ``re`` likewise for the remote
    ephemeral (fallback patterns). ``e`` is the local ephemeral: required when
    the pattern lists it as a pre-message (fallback), otherwise optional and,
    when given, used instead of a fresh key at the ``e`` token, which makes a
    handshake reproducible for test vectors. ``psks`` are consumed in the
    order of the pattern's ``psk`` tokens.
    """

    def __init__(
        self,
        protocol: NoiseProtocol | str,
        initiator: bool,
        prologue: bytes = b"",
        *,
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        if isinstance(protocol, str):
            protocol = parse_protocol_name(protocol)
        self.protocol = protocol
        self.initiator = initiator
        pattern = protocol.pattern
        self._dh = protocol.dh
        self._publen = protocol.dh.publen
        self._psk_mode = pattern.psk_count > 0
        self._check_keys(s, e, rs, re, psks)
        self._s = s
        self._e = e
        self._rs = rs
        self._re = re
        self._psks = list(psks)
        self._messages = pattern.messages
        self._layouts = _layouts(protocol)
        self._index = 0
        self._failed = False
        self._transport: Transport | None = None
        self._symmetric = SymmetricState(protocol)
        self._symmetric.mix_hash(prologue)
        local_pre, remote_pre = (
            (pattern.initiator_pre, pattern.responder_pre)
            if initiator
            else (pattern.responder_pre, pattern.initiator_pre)
        )
        local = [(token, (e if token == "e" else s).public) for token in local_pre]  # type: ignore[union-attr]
        remote = [(token, re if token == "e" else rs) for token in remote_pre]
        for token, public in (local + remote) if initiator else (remote + local):
            assert public is not None  # _check_keys made sure every pre-message key is here
            if token == "e":
                self._mix_public(public)
            else:
                self._symmetric.mix_hash(public)

    def _check_keys(
        self,
        s: KeyPair | None,
        e: KeyPair | None,
        rs: bytes | None,
        re: bytes | None,
        psks: Sequence[bytes],
    ) -> None:
        pattern = self.protocol.pattern
        name = self.protocol.name
        role = "initiator" if self.initiator else "responder"
        remote_pre = pattern.responder_pre if self.initiator else pattern.initiator_pre
        local_pre = pattern.initiator_pre if self.initiator else pattern.responder_pre
        if pattern.uses_static(self.initiator) and s is None:
            raise HandshakeStateError(f"{name}: the {role} needs a static key pair")
        if "s" in remote_pre and rs is None:
            raise HandshakeStateError(f"{name}: the {role} needs the remote static key")
        if "e" in remote_pre and re is None:
            raise HandshakeStateError(f"{name}: the {role} needs the remote ephemeral key")
        if "e" in local_pre and e is None:
            raise HandshakeStateError(f"{name}: the {role} needs its pre-message ephemeral")
        for key in (rs, re):
            if key is not None:
                self._dh.check_public(key)
        for key_pair in (s, e):
            if key_pair is not None:
                self._dh.check_public(key_pair.public)
        if len(psks) != pattern.psk_count:
            raise HandshakeStateError(
                f"{name} needs {pattern.psk_count} PSK(s), got {len(psks)}"
            )
        if any(len(psk) != PSK_LEN for psk in psks):
            raise InvalidKeyError(f"a PSK must be {PSK_LEN} bytes")

    def _mix_public(self, public: bytes) -> None:
        self._symmetric.mix_hash(public)
        if self._psk_mode:
            self._symmetric.mix_key(public)

    # --- state queries -------------------------------------------------

    @property
    def complete(self) -> bool:
        """True once every handshake message has been written or read."""
        return self._transport is not None

    @property
    def writes_next(self) -> bool:
        """True if the next handshake message is this party's to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    @property
    def message_index(self) -> int:
        """How many handshake messages have been processed."""
        return self._index

    def next_layout(self) -> MessageLayout:
        """The layout of the next handshake message (to write or to read)."""
        if self.complete:
            raise HandshakeStateError("the handshake is complete")
        return self._layouts[self._index]

    @property
    def handshake_hash(self) -> bytes:
        """GetHandshakeHash(): ``h``, for channel binding once the handshake is complete."""
        return self._symmetric.h

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once known."""
        return self._rs

    @property
    def remote_ephemeral(self) -> bytes | None:
        """The peer's ephemeral public key, once received."""
        return self._re

    @property
    def local_static(self) -> KeyPair | None:
        """This party's static key pair."""
        return self._s

    def transport(self) -> Transport:
        """The transport CipherStates; only after the handshake is complete."""
        if self._transport is None:
            raise HandshakeStateError("the handshake is not complete yet")
        return self._transport

    # --- processing ----------------------------------------------------

    def _check_turn(self, writing: bool) -> None:
        if self._failed:
            raise HandshakeStateError("the handshake already failed; start a new one")
        if self.complete:
            raise HandshakeStateError("the handshake is already complete")
        if self.writes_next != writing:
            raise HandshakeStateError(
                "it is the peer's turn to send" if writing else "it is our turn to send"
            )

    def _dh_token(self, token: str) -> None:
        # es = DH(initiator e, responder s), and so on; map to local/remote keys.
        local_kind, remote_kind = (token[0], token[1]) if self.initiator else (token[1], token[0])
        local = self._e if local_kind == "e" else self._s
        remote = self._re if remote_kind == "e" else self._rs
        if local is None or remote is None:
            raise HandshakeStateError(f"DH '{token}' is missing a key")
        self._symmetric.mix_key(self._dh.dh(local, remote))

    def _next_psk(self) -> bytes:
        return self._psks.pop(0)

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage(payload): the next handshake message to send.

        A message that would exceed 65535 bytes is refused before any state changes.
        """
        self._check_turn(writing=True)
        layout = self._layouts[self._index]
        size = layout.overhead + len(payload) + (TAGLEN if layout.payload_encrypted else 0)
        if size > MAX_MESSAGE_LEN:
            raise MessageTooLongError(f"handshake message of {size} bytes exceeds 65535")
        symmetric = self._symmetric
        parts: list[bytes] = []
        try:
            for token in self._messages[self._index]:
                if token == "e":
                    if self._e is None:
                        self._e = self._dh.generate_keypair()
                    parts.append(self._e.public)
                    self._mix_public(self._e.public)
                elif token == "s":
                    assert self._s is not None  # checked in __init__
                    parts.append(symmetric.encrypt_and_hash(self._s.public))
                elif token == "psk":
                    symmetric.mix_key_and_hash(self._next_psk())
                else:
                    self._dh_token(token)
            parts.append(symmetric.encrypt_and_hash(payload))
        except NoiseError:
            self._failed = True
            raise
        self._advance()
        return b"".join(parts)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage(message): process the peer's handshake message, return its payload.

        Any failure (truncated message, bad key, failed decryption) raises a
        :class:`NoiseError` and leaves this handshake unusable except for
        :meth:`fallback`.
        """
        self._check_turn(writing=False)
        if len(message) > MAX_MESSAGE_LEN:
            raise MessageTooLongError(f"handshake message of {len(message)} bytes exceeds 65535")
        layout = self._layouts[self._index]
        if len(message) < layout.overhead + (TAGLEN if layout.payload_encrypted else 0):
            self._failed = True
            raise DecryptError("handshake message is truncated")
        symmetric = self._symmetric
        publen = self._publen
        offset = 0
        try:
            for token in self._messages[self._index]:
                if token == "e":
                    self._re = message[offset : offset + publen]
                    offset += publen
                    self._mix_public(self._re)
                elif token == "s":
                    length = publen + (TAGLEN if symmetric.cipher_state.has_key() else 0)
                    self._rs = symmetric.decrypt_and_hash(message[offset : offset + length])
                    offset += length
                elif token == "psk":
                    symmetric.mix_key_and_hash(self._next_psk())
                else:
                    self._dh_token(token)
            payload = symmetric.decrypt_and_hash(message[offset:])
        except NoiseError:
            self._failed = True
            raise
        self._advance()
        return payload

    def _advance(self) -> None:
        self._index += 1
        if self._index < len(self._messages):
            return
        first, second = self._symmetric.split()
        if self.protocol.pattern.one_way:
            send, receive = (first, None) if self.initiator else (None, first)
        else:
            send, receive = (first, second) if self.initiator else (second, first)
        self._transport = Transport(send, receive, self._symmetric.h, self._rs)

    def fallback(
        self,
        protocol: NoiseProtocol | str,
        prologue: bytes = b"",
        psks: Sequence[bytes] = (),
    ) -> HandshakeState:
        """Start the fallback handshake (e.g. ``XXfallback``) after a failed first message.

        Roles swap, as the fallback pattern is Bob-initiated: the party that
        sent the first message (Alice) becomes the responder and keeps her
        ephemeral as a pre-message; Bob becomes the initiator and takes
        Alice's ephemeral from the message he could not fully read.
        """
        if isinstance(protocol, str):
            protocol = parse_protocol_name(protocol)
        if "fallback" not in protocol.pattern.name:
            raise HandshakeStateError(f"{protocol.name} is not a fallback protocol")
        if self._index > 1:
            raise HandshakeStateError("fallback is only possible after the first message")
        return HandshakeState(
            protocol,
            initiator=not self.initiator,
            prologue=prologue,
            s=self._s,
            e=self._e if self.initiator else None,
            re=self._re if not self.initiator else None,
            psks=psks,
        )
