"""What one chat server lets any peer or account hold: connections, time, bytes, rows.

Two validated models: :class:`ConnectionLimits` (the server's sockets and the
time and memory a connection may take before it has an account) and
:class:`StoreLimits` (what one account may keep in the store, and how long a
write waits for the database). docs/messenger.md,
"Limits", gives the defaults and the memory a connection costs under each
known attack.
"""

from __future__ import annotations

import resource

from pydantic import BaseModel, ConfigDict, Field, model_validator

_Frozen = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
#: The share of the process's file-descriptor limit chat connections may take; the
#: rest stays for the database, the media server's connections and the log.
CONNECTION_SHARE_OF_FDS = 0.75


def default_max_connections() -> int:
    """Three quarters of this process's soft RLIMIT_NOFILE (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, int(soft * CONNECTION_SHARE_OF_FDS))


class ConnectionLimits(BaseModel):
    """Caps and timeouts for the chat port."""

    model_config = _Frozen

    max_connections: int = Field(default_factory=default_max_connections, ge=1)
    """Open connections of every kind; one more is closed as soon as it is accepted."""
    max_unregistered: int | None = Field(default=None, ge=1)
    """Connections whose key has no account yet; one more is refused (``server_busy``) right
    after its handshake. None: half of ``max_connections``, so accounts always find room."""
    auth_timeout: float = Field(default=30.0, gt=0)
    """Seconds a connection may stay unregistered after its handshake."""
    unregistered_hold: int = Field(default=8 * 1024, ge=1024)
    """Bytes of one message held for a connection without an account (a register or hello
    is far smaller); beyond, the message is dropped as it arrives and answered ``too_large``."""
    log_burst: int = Field(default=20, ge=1)
    """Connection-close log lines per ``log_period`` and reason; more are counted, not written."""
    log_period: float = Field(default=10.0, gt=0)
    """Seconds over which ``log_burst`` applies."""

    @model_validator(mode="after")
    def _unregistered_within_total(self) -> ConnectionLimits:
        if self.max_unregistered is not None and self.max_unregistered > self.max_connections:
            raise ValueError("max_unregistered cannot exceed max_connections")
        return self

    @property
    def unregistered_cap(self) -> int:
        """``max_unregistered``, or half of ``max_connections`` when unset."""
        if self.max_unregistered is not None:
            return self.max_unregistered
        return max(1, self.max_connections // 2)


class StoreLimits(BaseModel):
    """What the store keeps for one account, and how long a write waits for the database."""

    model_config = _Frozen

    max_inbox: int = Field(default=20_000, ge=1)
    """Undelivered messages queued for one recipient."""
    max_outbox: int = Field(default=5_000, ge=1)
    """Undelivered messages one sender has queued, to anyone: less than ``max_inbox``, so
    one account cannot fill another's inbox."""
    max_prekeys: int = Field(default=1_000, ge=1)
    """One-time prekeys the key directory holds for one account."""
    max_prekey_chars: int = Field(default=256, ge=1)
    """Length of one one-time prekey string (a base64 X25519 key is 44)."""
    max_bundle_bytes: int = Field(default=16 * 1024, ge=1)
    """The long-term part of a key bundle, as JSON."""
    busy_timeout: float = Field(default=5.0, gt=0)
    """Seconds a write waits for another process's lock on the database before the requests
    of that group commit are answered ``unavailable``."""
