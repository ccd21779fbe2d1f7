"""The server-readable mode: the chat server reads each message and is the censor.

What happens to a message that hits a list depends on where its sender
registered (not on the number linked now):

* ``mainland``: dropped **silently**: the sender gets the ordinary ``ack``
  ("sent"), nothing is stored, the recipient never sees it, so no delivery
  receipt ever comes back;
* ``international``: delivered, and the hit goes to the **surveillance log**
  (who, when, to whom, which rule: never the text).

Group chats are screened with the ``group`` scope, one-to-one messages with
``one_to_one``: a list can block more in groups.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from noisewall.clock import Clock, SystemClock
from noisewall.messenger import payloads
from noisewall.messenger.messages import (
    Account,
    Ack,
    AddMember,
    CreateGroup,
    Error,
    Group,
    Link,
    Reply,
    SendGroup,
)
from noisewall.messenger.wechat.directory import (
    DirectoryError,
    Region,
    WeChatDirectory,
    region_of,
)
from noisewall.messenger.wechat.filters import FilterLists, Scope
from noisewall.messenger.wechat.images import perceptual_hash

log = logging.getLogger("noisewall.messenger.wechat")

Mode = Literal["e2e", "wechat"]
MODES: tuple[Mode, ...] = ("e2e", "wechat")
DIRECTORY_FILE = "wechat.sqlite3"
SURVEILLANCE_FILE = "surveillance.jsonl"

#: Stores ``envelope`` from the first name for the second under ``msg_id``; False if a
#: duplicate. Raises the store's ``UnknownRecipientError`` for an unknown recipient.
Deliver = Callable[[str, str, str, dict[str, Any]], Awaitable[bool]]
WeChatRequest = Link | CreateGroup | AddMember | SendGroup


@dataclass(frozen=True)
class Hit:
    """A message that matched a list: which rule, of which kind."""

    rule: str
    kind: Literal["keyword", "image"]


def screen(lists: FilterLists, payload: dict[str, Any], scope: Scope, now: float) -> Hit | None:
    """The rule an inner message hits, if any; :class:`ValueError` for an unreadable image."""
    text = payload.get("text")
    if isinstance(text, str):
        keyword = lists.match_text(text, scope, now)
        if keyword is not None:
            return Hit(keyword.id, "keyword")
    if payload.get("kind") == "image" and lists.images:
        try:
            data = base64.b64decode(str(payload.get("image", "")), validate=True)
        except binascii.Error:
            raise ValueError("the image is not base64") from None
        picture = lists.match_image(perceptual_hash(data), scope, now)
        if picture is not None:
            return Hit(picture.id, "image")
    return None


class SurveillanceLog:
    """The operator's view: one JSON line per hit (mode 0600; never the message text)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def record(self, **entry: Any) -> None:
        """Append one entry and flush it."""
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class WeChatMode:
    """Regions, groups and the filter lists of one server in WeChat mode."""

    def __init__(self, data_dir: Path, lists: FilterLists, clock: Clock | None = None) -> None:
        self.lists = lists
        self.clock = clock or SystemClock()
        self.directory = WeChatDirectory(data_dir / DIRECTORY_FILE)
        self.surveillance = SurveillanceLog(data_dir / SURVEILLANCE_FILE)

    def close(self) -> None:
        """Close the directory and the log."""
        self.directory.close()
        self.surveillance.close()

    async def registering(self, name: str, region: str | None) -> Error | None:
        """Record the registration region (needed the first time); an error reply if refused."""
        try:
            await self.directory.set_region(name, None if region is None else region_of(region))
        except DirectoryError as exc:
            return Error(exc.code, str(exc))
        return None

    async def screen_send(self, sender: str, to: str, msg_id: str,
                          envelope: dict[str, Any]) -> Reply | None:
        """None to deliver a one-to-one message, else the reply (a silent drop is an ack)."""
        return await self._screen(sender, "one_to_one", to, msg_id, envelope)

    async def handle(self, account: str, request: WeChatRequest, deliver: Deliver) -> Reply:
        """Answer a WeChat-mode request (links and groups) from ``account``."""
        try:
            return await self._handle(account, request, deliver)
        except DirectoryError as exc:
            return Error(exc.code, str(exc))

    async def _handle(self, account: str, request: WeChatRequest, deliver: Deliver) -> Reply:
        match request:
            case Link(region=linked):
                region, now_linked = await self.directory.link(account, region_of(linked))
                return Account(account, region, now_linked)
            case CreateGroup(group=group):
                return Group(group, await self.directory.create_group(group, account))
            case AddMember(group=group, name=name):
                return Group(group, await self.directory.add_member(group, account, name))
        assert isinstance(request, SendGroup)
        members = await self.directory.members(request.group, account)
        refused = await self._screen(account, "group", request.group, request.msg_id,
                                     request.envelope)
        if refused is not None:
            return refused
        envelope = {**request.envelope, "group": request.group}
        for member in members:
            if member != account:
                # One stored copy per member; the store deduplicates per (sender, msg_id).
                await deliver(account, member, f"{request.msg_id}.{member}", envelope)
        return Ack(request.msg_id)

    async def _screen(self, sender: str, scope: Scope, to: str, msg_id: str,
                      envelope: dict[str, Any]) -> Reply | None:
        try:
            payload = payloads.open_plain(envelope)
            now = self.clock.now()
            hit = screen(self.lists, payload, scope, now)
        except ValueError as exc:  # no clear inner message (PayloadError), a bad image
            return Error("bad_request", f"this server reads messages: {exc}")
        if hit is None:
            return None
        region: Region | None = await self.directory.region(sender)
        dropped = region != "international"
        self.surveillance.record(ts=now, sender=sender, region=region, scope=scope, to=to,
                                 msg_id=msg_id, rule=hit.rule, kind=hit.kind,
                                 action="dropped" if dropped else "delivered")
        return Ack(msg_id) if dropped else None


def wechat_mode(mode: Mode, data_dir: Path, lists: FilterLists | None,
                clock: Clock | None = None) -> WeChatMode | None:
    """The WeChat mode for a server, or None for an E2E one (which says lists cannot act)."""
    if mode == "wechat":
        return WeChatMode(data_dir, lists or FilterLists(), clock)
    if lists:
        log.warning("filter lists loaded (%d rules) but this server is end-to-end encrypted: "
                    "it cannot read messages, so the lists cannot act (use --mode wechat)",
                    len(lists))
    return None
