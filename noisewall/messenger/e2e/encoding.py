"""The wire and storage shapes: bundles, envelopes, X3DH headers, base64 and JSON.

Every parser raises the caller's :class:`~noisewall.messenger.e2e.errors.E2EError`
subclass with a message that names the field and never carries key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import x3dh
import xeddsa
from doubleratchet import EncryptedMessage
from doubleratchet import Header as RatchetHeader

from noisewall.messenger.e2e.errors import BundleError, E2EError, MalformedEnvelopeError, StateError
from noisewall.messenger.e2e.primitives import KEY_SIZE, X3DHState

ENVELOPE_VERSION = 1
_SIGNATURE_SIZE = 64
_MAX_COUNTER = 2**63 - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, what: str, size: int | None, error: type[E2EError]) -> bytes:
    if not isinstance(value, str):
        raise error(f"{what} must be a base64 string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{what} is not valid base64") from None
    if size is not None and len(data) != size:
        raise error(f"{what} must be {size} bytes, not {len(data)}")
    return data


def name_bytes(name: object, what: str) -> bytes:
    if not isinstance(name, str) or not name:
        raise E2EError(f"{what} must be a non-empty string")
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        raise E2EError(f"{what} is not valid UTF-8") from None
    if len(data) > 0xFFFF:
        raise E2EError(f"{what} is too long")
    return data


def fingerprint(identity_key: bytes) -> str:
    """A human-comparable fingerprint of an identity public key (64 hex digits in groups)."""
    digest = hashlib.sha256(b"noisewall-e2e-fingerprint" + identity_key).hexdigest()
    return " ".join(digest[i:i + 4] for i in range(0, len(digest), 4))


def json_load(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise StateError(f"stored {what} is not JSON") from None
    if not isinstance(data, dict):
        raise StateError(f"stored {what} is not a JSON object")
    return data


def json_dump(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def parse_bundle(bundle: Mapping[str, Any]) -> x3dh.Bundle:
    """Validate a bundle dict (shape, key sizes, signed prekey signature) and convert it.

    Raises :class:`BundleError`. The directory may use this to check uploads.
    """
    if not isinstance(bundle, Mapping):
        raise BundleError("a bundle must be a JSON object")
    identity_key = unb64(bundle.get("identity_key"), "identity_key", KEY_SIZE, BundleError)
    signed_prekey = unb64(bundle.get("signed_prekey"), "signed_prekey", KEY_SIZE, BundleError)
    signature = unb64(bundle.get("signed_prekey_signature"), "signed_prekey_signature",
                       _SIGNATURE_SIZE, BundleError)
    raw_prekeys = bundle.get("one_time_prekeys", [])
    if not isinstance(raw_prekeys, list):
        raise BundleError("one_time_prekeys must be a list")
    prekeys = frozenset(
        unb64(p, "one_time_prekeys[]", KEY_SIZE, BundleError) for p in raw_prekeys
    )
    try:
        ed_identity = xeddsa.curve25519_pub_to_ed25519_pub(identity_key, False)
        valid = xeddsa.ed25519_verify(
            signature, ed_identity,
            X3DHState._encode_public_key(x3dh.IdentityKeyFormat.CURVE_25519, signed_prekey),
        )
    except (ValueError, xeddsa.XEdDSAException):
        valid = False
    if not valid:
        raise BundleError("the signed prekey signature does not verify")
    return x3dh.Bundle(identity_key=identity_key, signed_pre_key=signed_prekey,
                       signed_pre_key_sig=signature, pre_keys=prekeys)


def bundle_to_dict(bundle: x3dh.Bundle, prekeys: list[bytes]) -> dict[str, Any]:
    return {
        "identity_key": b64(bundle.identity_key),
        "signed_prekey": b64(bundle.signed_pre_key),
        "signed_prekey_signature": b64(bundle.signed_pre_key_sig),
        "one_time_prekeys": [b64(p) for p in prekeys],
    }



def x3dh_header_to_json(header: x3dh.Header) -> dict[str, Any]:
    return {
        "identity_key": b64(header.identity_key),
        "ephemeral_key": b64(header.ephemeral_key),
        "signed_prekey": b64(header.signed_pre_key),
        "one_time_prekey": None if header.pre_key is None else b64(header.pre_key),
    }


def x3dh_header_from_json(data: object, error: type[E2EError]) -> x3dh.Header:
    if not isinstance(data, dict):
        raise error("x3dh must be an object or null")
    pre_key = data.get("one_time_prekey")
    return x3dh.Header(
        identity_key=unb64(data.get("identity_key"), "x3dh.identity_key", KEY_SIZE, error),
        ephemeral_key=unb64(data.get("ephemeral_key"), "x3dh.ephemeral_key", KEY_SIZE, error),
        signed_pre_key=unb64(data.get("signed_prekey"), "x3dh.signed_prekey", KEY_SIZE, error),
        pre_key=None if pre_key is None
        else unb64(pre_key, "x3dh.one_time_prekey", KEY_SIZE, error),
    )


class Envelope(NamedTuple):
    x3dh: x3dh.Header | None
    message: EncryptedMessage


def envelope_to_json(pending: x3dh.Header | None, message: EncryptedMessage) -> dict[str, Any]:
    header = message.header
    return {
        "v": ENVELOPE_VERSION,
        "x3dh": None if pending is None else x3dh_header_to_json(pending),
        "ratchet": {
            "dh": b64(header.ratchet_pub),
            "pn": header.previous_sending_chain_length,
            "n": header.sending_chain_length,
        },
        "ct": b64(message.ciphertext),
    }


def _counter(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNTER:
        raise MalformedEnvelopeError(f"{what} must be a non-negative integer")
    return value


def parse_envelope(envelope: object) -> Envelope:
    if not isinstance(envelope, Mapping):
        raise MalformedEnvelopeError("an envelope must be a JSON object")
    if envelope.get("v") != ENVELOPE_VERSION:
        raise MalformedEnvelopeError("unsupported envelope version")
    raw_x3dh = envelope.get("x3dh")
    header = (None if raw_x3dh is None
              else x3dh_header_from_json(raw_x3dh, MalformedEnvelopeError))
    ratchet = envelope.get("ratchet")
    if not isinstance(ratchet, Mapping):
        raise MalformedEnvelopeError("ratchet must be an object")
    ratchet_header = RatchetHeader(
        ratchet_pub=unb64(ratchet.get("dh"), "ratchet.dh", KEY_SIZE, MalformedEnvelopeError),
        previous_sending_chain_length=_counter(ratchet.get("pn"), "ratchet.pn"),
        sending_chain_length=_counter(ratchet.get("n"), "ratchet.n"),
    )
    ciphertext = unb64(envelope.get("ct"), "ct", None, MalformedEnvelopeError)
    if not ciphertext:
        raise MalformedEnvelopeError("ct must not be empty")
    return Envelope(header, EncryptedMessage(header=ratchet_header, ciphertext=ciphertext))

