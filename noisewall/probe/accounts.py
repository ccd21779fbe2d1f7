"""The probe's own messenger accounts, kept in a state folder and registered on first use.

Each (vantage, feature) that talks to the chat server gets its own account,
because the server keeps one live connection per account: features measured
at the same time must not push each other off. Account names are derived
from the vantage label by digest, so any label fits the server's name rules.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from noisewall.errors import InputError
from noisewall.messenger import payloads, wire
from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.e2e import E2EIdentity, E2ESessions, SqliteSessionStore
from noisewall.messenger.messages import (
    Bundle,
    FetchBundle,
    Message,
    Ok,
    PublishKeys,
    Register,
    Send,
    Welcome,
)
from noisewall.messenger.profile import Profile
from noisewall.noise import KeyPair, dh_function
from noisewall.probe.settings import ProbeSettings


def account_name(prefix: str, label: str, role: str) -> str:
    """``<prefix>-<digest of label>-<role>``: always a valid, stable account name."""
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:8]
    return f"{prefix}-{digest}-{role}"


class ProbeAccount:
    """One account: Noise static key, cached server key, E2E identity and sessions."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.profile = Profile(folder)
        self._store = SqliteSessionStore(self.profile.db)
        self._sessions: E2ESessions | None = None
        stored = self.profile.get("probe_static")
        dh = dh_function("25519")
        if stored is None:
            self.static: KeyPair = dh.generate_keypair()
            self.profile.set("probe_static", self.static.private_bytes().hex())
        else:
            self.static = dh.keypair_from_private(bytes.fromhex(stored))

    @property
    def server_key(self) -> bytes | None:
        """The server's static key as a previous handshake proved it (for Noise IK)."""
        cached = self.profile.get("server_key")
        return bytes.fromhex(cached) if cached else None

    def remember_server(self, connection: ChatConnection) -> None:
        """Cache the server key this connection authenticated."""
        if connection.server_key is not None:
            self.profile.set("server_key", connection.server_key.hex())

    @property
    def sessions(self) -> E2ESessions:
        """This account's end-to-end sessions."""
        if self._sessions is None:
            identity = E2EIdentity.load_or_create(self._store, self.name)
            self._sessions = E2ESessions(identity, self._store)
        return self._sessions

    async def ensure_registered(self, settings: ProbeSettings, e2e: bool) -> None:
        """Register on the server over the setup path, once per server (and publish E2E keys)."""
        server = f"{settings.server[0]}:{settings.server[1]}"
        if self.profile.get("registered") == server:
            return
        connection = await ChatConnection.open(
            *settings.server, self.static, None, framing=settings.framing,
            timeout=settings.connect_timeout + settings.phase_timeout,
            socks5=settings.setup_socks5)
        try:
            self.remember_server(connection)
            try:
                await connection.call(Register(self.name), Welcome, settings.phase_timeout)
            except ChatError as exc:
                if exc.code == "name_taken":
                    raise InputError(
                        f"the account {self.name!r} on {server} belongs to another probe: "
                        "use another state folder's accounts or another account prefix"
                    ) from None
                raise
            if e2e:
                await connection.call(PublishKeys(self.sessions.identity.publish_bundle()), Ok,
                                      settings.phase_timeout)
        finally:
            await connection.close()
        self.profile.set("registered", server)

    def close(self) -> None:
        """Close the account's database."""
        self.profile.close()


async def seal(account: ProbeAccount, connection: ChatConnection, to: str,
               payload: dict[str, Any], timeout: float) -> Send:
    """The ``send`` request carrying ``payload`` end-to-end encrypted for ``to``.

    ``payload`` is the app's inner message (:mod:`~noisewall.messenger.payloads`),
    so any noisewall client understands it.
    """

    async def fetch_bundle(peer: str) -> dict[str, Any]:
        return (await connection.call(FetchBundle(peer), Bundle, timeout)).bundle

    envelope = await payloads.seal(account.sessions, to, payload, fetch_bundle)
    return Send(to, str(payload["id"]), envelope)


def wire_size(request: Send) -> int:
    """Bytes a request takes inside the Noise channel (the payload the bulk phase moves)."""
    return len(wire.encode(request.to_wire()))


async def open_payload(account: ProbeAccount, push: Message) -> dict[str, Any] | None:
    """Decrypt a pushed message; None if this account cannot read it (the app drops those)."""
    try:
        return await payloads.open_sealed(account.sessions, push.sender, push.envelope)
    except payloads.PayloadError:
        return None
