"""The app's inner messages (what a ``send`` envelope carries), shared by the client and the probe.

An inner message is a JSON object with ``kind``, ``id`` (the message id) and
``ts`` (the sender's clock), see :mod:`~noisewall.messenger.client`. End to end,
it travels encrypted in the envelope (:func:`seal`, :func:`open_sealed`); to a
server in WeChat mode, in the clear (:func:`unsealed`, :func:`open_plain`).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from noisewall.messenger.e2e import E2EError, E2ESessions

FetchBundle = Callable[[str], Awaitable[Mapping[str, Any]]]


class PayloadError(ValueError):
    """An envelope that cannot be read as an inner message (undecryptable or malformed)."""


def new_message_id() -> str:
    """A fresh message id."""
    return secrets.token_urlsafe(12)


def text(body: str) -> dict[str, Any]:
    """A text message (without id and timestamp)."""
    return {"kind": "text", "text": body}


def location(lat: float, lon: float, label: str | None) -> dict[str, Any]:
    """A location (without id and timestamp)."""
    return {"kind": "location", "lat": lat, "lon": lon, "label": label}


def image(data: bytes, name: str | None = None) -> dict[str, Any]:
    """An image carried inline (WeChat mode: the server reads it), without id and timestamp."""
    return {"kind": "image", "image": base64.b64encode(data).decode("ascii"), "name": name}


def receipt(status: str, ids: list[str]) -> dict[str, Any]:
    """A delivered/read/played receipt for ``ids`` (without id and timestamp)."""
    return {"kind": "receipt", "status": status, "ids": ids}


def stamped(payload: Mapping[str, Any], ts: float) -> dict[str, Any]:
    """``payload`` with a fresh ``id`` and the timestamp ``ts``."""
    return {**payload, "id": new_message_id(), "ts": ts}


async def seal(sessions: E2ESessions, to: str, payload: Mapping[str, Any],
               fetch_bundle: FetchBundle,
               on_saved: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The end-to-end envelope carrying ``payload`` for ``to`` (see ``E2ESessions.encrypt``)."""
    return await sessions.encrypt(to, json.dumps(payload).encode("utf-8"), fetch_bundle,
                                  on_saved=on_saved)


async def open_sealed(sessions: E2ESessions, sender: str, envelope: Mapping[str, Any], *,
                      persist: bool = True) -> dict[str, Any]:
    """The inner message in ``sender``'s envelope; :class:`PayloadError` if there is none."""
    try:
        payload = json.loads(await sessions.decrypt(sender, envelope, persist=persist))
    except (E2EError, ValueError, TypeError) as exc:
        raise PayloadError(f"unreadable envelope from {sender!r}: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("kind"), str) \
            or "id" not in payload:
        raise PayloadError(f"envelope from {sender!r} holds no inner message")
    return payload


def unsealed(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope carrying ``payload`` in the clear, for a server that reads messages."""
    return {"plain": dict(payload)}


def open_plain(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The inner message of a clear envelope; :class:`PayloadError` if there is none."""
    payload = envelope.get("plain")
    if not isinstance(payload, dict) or not isinstance(payload.get("kind"), str):
        raise PayloadError("the envelope holds no clear inner message ('plain' with a 'kind')")
    return payload
