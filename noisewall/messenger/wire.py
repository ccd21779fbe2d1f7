"""The chat protocol spoken inside the Noise channel (sans-IO).

Every application message on the NoiseStream is one UTF-8 JSON object with a
``type``. Requests carry an ``id`` the reply repeats. The server never sees
plaintext: ``envelope`` objects are end-to-end encrypted by the clients and
opaque to it.

Client to server:

* ``register {name}``: bind ``name`` to the connection's Noise static key.
* ``hello``: who am I (by static key) and the media server's coordinates.
* ``publish_keys {bundle}``: identity key, signed prekey, one-time prekeys.
* ``fetch_bundle {name}``: a peer's bundle with at most one one-time prekey.
* ``send {to, msg_id, envelope}``: store-and-forward; ``ack`` only after commit.
* ``delivered {queue_ids}``: the client has the messages; the server deletes them.

Server to client: ``ok``, ``ack {msg_id}``, ``bundle``, ``error {code, message}``
(replies), and ``message {queue_id, from, msg_id, envelope, sent_at}`` (push).

:mod:`~noisewall.messenger.messages` holds one typed class per message; this
module holds the JSON framing and the field checks they use.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_FRAME = 1024 * 1024
MAX_IDS = 1000
#: An account name in canonical form; use with ``fullmatch`` (``$`` would let ``"bob\n"``
#: through). :mod:`noisewall.messenger.names` turns any spelling into this form.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
MSG_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: JSON's escape for a UTF-16 surrogate: only a pair of them spells a character.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class WireError(ValueError):
    """A request that is not valid JSON or breaks the protocol; ``code`` goes in the reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def encode(message: dict[str, Any]) -> bytes:
    """One protocol message as bytes."""
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def decode(data: bytes) -> dict[str, Any]:
    """Parse one protocol message; raise :class:`WireError` if it is not a JSON object."""
    if len(data) > MAX_FRAME:
        raise WireError("too_large", f"message of {len(data)} bytes exceeds {MAX_FRAME}")
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("bad_request", "not a UTF-8 JSON object") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("bad_request", "a message is a JSON object with a string 'type'")
    # A lone surrogate escape decodes to a string that is not text: it fails later, wherever
    # it is encoded (SQLite, logs). Refused here, once; the re-encoding runs only when an
    # escape is there at all.
    if SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(message, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise WireError("bad_request", "a string holds a lone surrogate escape") from None
    return message


def require_str(message: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    """A string field, optionally matching ``pattern`` in full."""
    value = message.get(key)
    if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
        raise WireError("bad_request", f"field {key!r} is missing or malformed")
    return value


def require_dict(message: dict[str, Any], key: str) -> dict[str, Any]:
    """An object field."""
    value = message.get(key)
    if not isinstance(value, dict):
        raise WireError("bad_request", f"field {key!r} must be an object")
    return value


def require_ints(message: dict[str, Any], key: str) -> list[int]:
    """A list of at most MAX_IDS row ids (integers SQLite can hold: 0..2^63-1)."""
    value = message.get(key)
    if not isinstance(value, list) or len(value) > MAX_IDS or not all(
        isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 2**63
        for item in value
    ):
        raise WireError("bad_request", f"field {key!r} must be a list of at most {MAX_IDS} "
                        "row ids")
    return value

