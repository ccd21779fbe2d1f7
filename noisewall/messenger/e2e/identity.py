"""An account's X3DH identity: identity key, rotating signed prekey, one-time prekeys."""

from __future__ import annotations

from typing import Any

import x3dh

from noisewall.messenger.e2e.encoding import (
    b64,
    bundle_to_dict,
    fingerprint,
    json_dump,
    json_load,
    name_bytes,
    unb64,
)
from noisewall.messenger.e2e.errors import StateError
from noisewall.messenger.e2e.primitives import KEY_SIZE, X3DH_INFO, X3DHState
from noisewall.messenger.e2e.store import SessionStore

DEFAULT_ONE_TIME_PREKEYS = 100
MAX_LOCAL_ONE_TIME_PREKEYS = 300
"""Private one-time prekeys kept at most; the oldest go first beyond this."""


class E2EIdentity:
    """An account's X3DH state: identity key, signed prekey (rotating), one-time prekeys.

    Pure in-memory state, serializable with :meth:`to_json`/:meth:`from_json`.
    :class:`E2ESessions` persists it (use its ``top_up_one_time_prekeys`` and
    ``rotate_signed_prekey_if_due`` so changes are saved before they are
    published).
    """

    def __init__(self, account: str, state: X3DHState, prekey_order: list[bytes]) -> None:
        name_bytes(account, "account")
        self._account = account
        self._state = state
        self._prekey_order = prekey_order
        self._identity_key = state.bundle.identity_key
        self._sync_prekey_order()

    @classmethod
    def create(cls, account: str,
               one_time_prekeys: int = DEFAULT_ONE_TIME_PREKEYS) -> E2EIdentity:
        """A fresh identity for ``account`` with ``one_time_prekeys`` one-time prekeys."""
        state = X3DHState.create(x3dh.IdentityKeyFormat.CURVE_25519,
                                  x3dh.HashFunction.SHA_256, X3DH_INFO)
        identity = cls(account, state, [])
        identity.new_one_time_prekeys(one_time_prekeys)
        return identity

    @classmethod
    def load_or_create(cls, store: SessionStore, account: str,
                       one_time_prekeys: int = DEFAULT_ONE_TIME_PREKEYS) -> E2EIdentity:
        """The identity saved in ``store``, or a new one, saved there at once."""
        stored = store.load_identity()
        if stored is not None:
            identity = cls.from_json(stored.state)
            if identity.account != account:
                raise StateError("the stored identity belongs to another account")
            return identity
        identity = cls.create(account, one_time_prekeys)
        store.save_identity(identity.to_json(), None)
        return identity

    # -- serialization

    def to_json(self) -> str:
        """The full private state as a JSON string (store it like a private key)."""
        return json_dump({
            "v": 1,
            "account": self._account,
            "x3dh": dict(self._state.json),
            "prekey_order": [b64(p) for p in self._prekey_order],
        })

    @classmethod
    def from_json(cls, text: str) -> E2EIdentity:
        """Restore an identity saved with :meth:`to_json`; raises :class:`StateError`."""
        data = json_load(text, "identity")
        if data.get("v") != 1:
            raise StateError("unsupported identity state version")
        account = data.get("account")
        order = data.get("prekey_order", [])
        if not isinstance(account, str) or not isinstance(order, list):
            raise StateError("stored identity is malformed")
        try:
            state, _ = X3DHState.from_json(
                data["x3dh"], x3dh.IdentityKeyFormat.CURVE_25519,
                x3dh.HashFunction.SHA_256, X3DH_INFO)
            prekey_order = [unb64(p, "prekey", KEY_SIZE, StateError) for p in order]
            return cls(account, state, prekey_order)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"stored identity is malformed ({type(exc).__name__})") from None

    def _adopt(self, other: E2EIdentity) -> None:
        self._account = other._account
        self._state = other._state
        self._prekey_order = other._prekey_order
        self._identity_key = other._identity_key

    def _sync_prekey_order(self) -> None:
        visible = self._state.bundle.pre_keys
        order = [p for p in self._prekey_order if p in visible]
        known = set(order)
        order.extend(sorted(p for p in visible if p not in known))
        self._prekey_order = order

    # -- public view

    @property
    def account(self) -> str:
        """The account name this identity belongs to."""
        return self._account

    @property
    def identity_key(self) -> bytes:
        """The identity public key (Curve25519, 32 bytes)."""
        return self._identity_key

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of :attr:`identity_key`."""
        return fingerprint(self.identity_key)

    def publish_bundle(self, include_one_time_prekeys: bool = True) -> dict[str, Any]:
        """The public bundle as JSON-able dict (see the module docstring).

        Publish it whole at registration. After a signed prekey rotation pass
        ``include_one_time_prekeys=False`` (prekeys the directory already
        handed out must not be offered again); top-ups upload only the keys
        :meth:`new_one_time_prekeys` returned.
        """
        bundle = self._state.bundle
        return bundle_to_dict(bundle, list(self._prekey_order) if include_one_time_prekeys
                               else [])

    @property
    def one_time_prekey_count(self) -> int:
        """One-time prekeys whose private halves are held (not yet used by a first message)."""
        return len(self._prekey_order)

    def needs_replenish(self, threshold: int, available: int | None = None) -> bool:
        """Whether fewer than ``threshold`` one-time prekeys remain.

        ``available`` is the directory's remaining stock when known (its
        ``publish_keys`` answer gives it); otherwise the local count is used,
        which overestimates the directory's stock (keys handed out to
        initiators that never wrote stay local).
        """
        count = self.one_time_prekey_count if available is None else available
        return count < threshold

    def new_one_time_prekeys(self, n: int) -> list[str]:
        """Generate ``n`` one-time prekeys; returns their public halves (base64) to upload.

        Beyond ``MAX_LOCAL_ONE_TIME_PREKEYS`` the oldest private prekeys are
        dropped (a first message that uses one then fails to agree).
        """
        if n < 0:
            raise ValueError("n must not be negative")
        before = self._state.bundle.pre_keys
        self._state.generate_pre_keys(n)
        new = sorted(self._state.bundle.pre_keys - before)
        self._prekey_order.extend(new)
        excess = len(self._prekey_order) - MAX_LOCAL_ONE_TIME_PREKEYS
        if excess > 0:
            for old in self._prekey_order[:excess]:
                self._state.delete_pre_key(old)
            del self._prekey_order[:excess]
        kept = set(self._prekey_order)
        return [b64(p) for p in new if p in kept]

    def signed_prekey_age(self) -> int:
        """Seconds since the signed prekey was generated."""
        return self._state.signed_pre_key_age()

    def rotate_signed_prekey(self) -> None:
        """Replace the signed prekey; the previous one is kept for one more rotation."""
        self._state.rotate_signed_pre_key()

    def _consume_one_time_prekey(self, pub: bytes) -> None:
        self._state.delete_pre_key(pub)
        self._prekey_order = [p for p in self._prekey_order if p != pub]

