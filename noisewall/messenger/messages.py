"""The chat protocol's vocabulary: one small frozen class per request, reply and push.

Server, client, probe and benchmark build these and match on them; only
:meth:`to_wire` and the ``parse_*`` functions know the JSON shape, which stays
exactly what :mod:`~noisewall.messenger.wire` documents (key order included,
so the bytes on the wire do not depend on which side built a message).

Requests carry no ``id``: the connection that sends one adds it. Replies are
built with the id of the request they answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from noisewall.messenger import names, wire
from noisewall.messenger.wire import WireError

# --- requests (client to server) ---------------------------------------


@dataclass(frozen=True)
class Register:
    """Bind ``name`` to the connection's Noise static key.

    ``region`` ("mainland" or "international") matters only on a server in
    WeChat mode; it is sent only when set, so E2E requests stay as they were.
    """

    TYPE: ClassVar[str] = "register"
    name: str
    region: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        message: dict[str, Any] = {"type": self.TYPE, "name": self.name}
        if self.region is not None:
            message["region"] = self.region
        return message


@dataclass(frozen=True)
class Hello:
    """Who am I (by static key), and the media server's coordinates."""

    TYPE: ClassVar[str] = "hello"

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE}


@dataclass(frozen=True)
class PublishKeys:
    """Publish an E2E bundle; ``one_time_prekeys`` travel inside ``bundle``."""

    TYPE: ClassVar[str] = "publish_keys"
    bundle: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "bundle": self.bundle}

    def split(self) -> tuple[dict[str, Any], list[str]]:
        """The bundle without its one-time prekeys, and those prekeys (validated)."""
        bundle = dict(self.bundle)
        prekeys = bundle.pop("one_time_prekeys", [])
        if not isinstance(prekeys, list) or not all(isinstance(p, str) for p in prekeys):
            raise WireError("bad_request", "one_time_prekeys must be a list of strings")
        return bundle, prekeys


@dataclass(frozen=True)
class FetchBundle:
    """A peer's bundle, with at most one one-time prekey."""

    TYPE: ClassVar[str] = "fetch_bundle"
    name: str

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "name": self.name}


@dataclass(frozen=True)
class Send:
    """Store and forward ``envelope`` to ``to``; acknowledged only after the commit."""

    TYPE: ClassVar[str] = "send"
    to: str
    msg_id: str
    envelope: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "to": self.to, "msg_id": self.msg_id,
                "envelope": self.envelope}


@dataclass(frozen=True)
class Delivered:
    """The client has these pushed messages; the server deletes them (no reply)."""

    TYPE: ClassVar[str] = "delivered"
    queue_ids: list[int]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "queue_ids": self.queue_ids}


@dataclass(frozen=True)
class Link:
    """Link another phone number, from ``region`` (WeChat mode; the registration region stays)."""

    TYPE: ClassVar[str] = "link"
    region: str

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "region": self.region}


@dataclass(frozen=True)
class CreateGroup:
    """Create the group chat ``group`` with the sender as its first member (WeChat mode)."""

    TYPE: ClassVar[str] = "create_group"
    group: str

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "group": self.group}


@dataclass(frozen=True)
class AddMember:
    """Add the account ``name`` to ``group`` (any member may; WeChat mode)."""

    TYPE: ClassVar[str] = "add_member"
    group: str
    name: str

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "group": self.group, "name": self.name}


@dataclass(frozen=True)
class SendGroup:
    """Send ``envelope`` to every other member of ``group`` (WeChat mode); ``ack`` when stored."""

    TYPE: ClassVar[str] = "send_group"
    group: str
    msg_id: str
    envelope: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        """The JSON object for this request (without ``id``)."""
        return {"type": self.TYPE, "group": self.group, "msg_id": self.msg_id,
                "envelope": self.envelope}


Request = (Register | Hello | PublishKeys | FetchBundle | Send | Delivered | Link | CreateGroup
           | AddMember | SendGroup)


def parse_request(message: dict[str, Any]) -> Request:
    """The typed request in a decoded message; :class:`WireError` if it breaks the protocol."""
    kind = message["type"]
    if kind == Register.TYPE:
        region = message.get("region")
        if region is not None and not isinstance(region, str):
            raise WireError("bad_request", "field 'region' must be a string")
        return Register(names.require_name(message, "name"), region)
    if kind == Hello.TYPE:
        return Hello()
    if kind == PublishKeys.TYPE:
        return PublishKeys(wire.require_dict(message, "bundle"))
    if kind == FetchBundle.TYPE:
        return FetchBundle(names.require_name(message, "name"))
    if kind == Send.TYPE:
        return Send(names.require_name(message, "to"),
                    wire.require_str(message, "msg_id", wire.MSG_ID_PATTERN),
                    wire.require_dict(message, "envelope"))
    if kind == Delivered.TYPE:
        return Delivered(wire.require_ints(message, "queue_ids"))
    if kind == Link.TYPE:
        return Link(wire.require_str(message, "region"))
    if kind == CreateGroup.TYPE:
        return CreateGroup(wire.require_str(message, "group", wire.NAME_PATTERN))
    if kind == AddMember.TYPE:
        return AddMember(wire.require_str(message, "group", wire.NAME_PATTERN),
                         names.require_name(message, "name"))
    if kind == SendGroup.TYPE:
        return SendGroup(wire.require_str(message, "group", wire.NAME_PATTERN),
                         wire.require_str(message, "msg_id", wire.MSG_ID_PATTERN),
                         wire.require_dict(message, "envelope"))
    raise WireError("bad_request", f"unknown request type {kind!r}")


# --- replies and pushes (server to client) -----------------------------


@dataclass(frozen=True)
class Welcome:
    """The answer to ``hello`` and ``register``: the account (None if unregistered)."""

    TYPE: ClassVar[str] = "welcome"
    name: str | None
    media: dict[str, Any] | None
    one_time_prekeys: int | None = None

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        message: dict[str, Any] = {"type": self.TYPE, "id": request_id, "name": self.name,
                                   "media": self.media}
        if self.one_time_prekeys is not None:
            message["one_time_prekeys"] = self.one_time_prekeys
        return message


@dataclass(frozen=True)
class Ok:
    """``publish_keys`` done: how many one-time prekeys the directory now holds."""

    TYPE: ClassVar[str] = "ok"
    one_time_prekeys: int

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        return {"type": self.TYPE, "id": request_id, "one_time_prekeys": self.one_time_prekeys}


@dataclass(frozen=True)
class Bundle:
    """A peer's published keys."""

    TYPE: ClassVar[str] = "bundle"
    name: str
    bundle: dict[str, Any]

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        return {"type": self.TYPE, "id": request_id, "name": self.name, "bundle": self.bundle}


@dataclass(frozen=True)
class Ack:
    """The message ``msg_id`` is committed on the server ("sent")."""

    TYPE: ClassVar[str] = "ack"
    msg_id: str

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        return {"type": self.TYPE, "id": request_id, "msg_id": self.msg_id}


@dataclass(frozen=True)
class Error:
    """A refused request; ``code`` says why."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        return {"type": self.TYPE, "id": request_id, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Account:
    """An account's regions (WeChat mode): where it registered, which number it links now."""

    TYPE: ClassVar[str] = "account"
    name: str
    region: str
    linked: str

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        return {"type": self.TYPE, "id": request_id, "name": self.name, "region": self.region,
                "linked": self.linked}


@dataclass(frozen=True)
class Group:
    """A group chat and its members."""

    TYPE: ClassVar[str] = "group"
    group: str
    members: list[str]

    def to_wire(self, request_id: object) -> dict[str, Any]:
        """The JSON reply to request ``request_id``."""
        return {"type": self.TYPE, "id": request_id, "group": self.group, "members": self.members}


Reply = Welcome | Ok | Bundle | Ack | Error | Account | Group


@dataclass(frozen=True)
class Message:
    """A pushed message for the recipient (``from`` on the wire is ``sender`` here)."""

    TYPE: ClassVar[str] = "message"
    queue_id: int
    sender: str
    msg_id: str
    envelope: dict[str, Any]
    sent_at: float

    def to_wire(self) -> dict[str, Any]:
        """The JSON push."""
        return {"type": self.TYPE, "queue_id": self.queue_id, "from": self.sender,
                "msg_id": self.msg_id, "envelope": self.envelope, "sent_at": self.sent_at}


@dataclass(frozen=True)
class Closed:
    """Not on the wire: the client's push queue ends with this when the connection drops."""

    TYPE: ClassVar[str] = "closed"
    reason: str

    def to_wire(self) -> dict[str, Any]:
        """The same shape as a push, for the connection's queue."""
        return {"type": self.TYPE, "reason": self.reason}


Push = Message | Closed


def _field(message: dict[str, Any], key: str, kind: type) -> Any:
    value = message.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError("bad_reply", f"{message.get('type')!r} field {key!r} is malformed")
    return value


def _optional(message: dict[str, Any], key: str, kind: type) -> Any:
    return None if message.get(key) is None else _field(message, key, kind)


def parse_reply(message: dict[str, Any]) -> Reply:
    """The typed reply in a decoded message; :class:`WireError` (``bad_reply``) if malformed."""
    kind = message.get("type")
    if kind == Welcome.TYPE:
        return Welcome(_optional(message, "name", str), _optional(message, "media", dict),
                       _optional(message, "one_time_prekeys", int))
    if kind == Ok.TYPE:
        return Ok(_field(message, "one_time_prekeys", int))
    if kind == Bundle.TYPE:
        return Bundle(_field(message, "name", str), _field(message, "bundle", dict))
    if kind == Ack.TYPE:
        return Ack(_field(message, "msg_id", str))
    if kind == Error.TYPE:
        return Error(str(message.get("code")), str(message.get("message")))
    if kind == Account.TYPE:
        return Account(_field(message, "name", str), _field(message, "region", str),
                       _field(message, "linked", str))
    if kind == Group.TYPE:
        members = _field(message, "members", list)
        if not all(isinstance(member, str) for member in members):
            raise WireError("bad_reply", "'group' field 'members' is malformed")
        return Group(_field(message, "group", str), members)
    raise WireError("bad_reply", f"unknown reply type {kind!r}")


def parse_push(message: dict[str, Any]) -> Push:
    """The typed push in a message from the connection's queue."""
    if message.get("type") == Closed.TYPE:
        return Closed(str(message.get("reason")))
    if message.get("type") != Message.TYPE:
        raise WireError("bad_reply", f"unknown push type {message.get('type')!r}")
    sent_at = message.get("sent_at")
    if not isinstance(sent_at, int | float) or isinstance(sent_at, bool):
        raise WireError("bad_reply", "'message' field 'sent_at' is malformed")
    return Message(_field(message, "queue_id", int), _field(message, "from", str),
                   _field(message, "msg_id", str), _field(message, "envelope", dict),
                   float(sent_at))
