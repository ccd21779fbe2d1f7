"""The messenger client: register, send (text, media, location), receive, receipts.

Every message is end-to-end encrypted (X3DH + Double Ratchet, :mod:`e2e`)
before it enters the outbox; the outbox is flushed to the server, and an
entry leaves it only when the server acknowledges (after its commit). The
inner, encrypted payload is a JSON object:

* ``{"kind": "text", "text": ...}``
* ``{"kind": "photo"|"video"|"voice", "media": <MediaDescriptor dict>, "name": ...}``
* ``{"kind": "location", "lat": ..., "lon": ..., "label": ...}``
* ``{"kind": "receipt", "status": "delivered"|"read"|"played", "ids": [...]}``

each with ``"id"`` (the message id) and ``"ts"`` (sender's clock).

A media message's blob is downloaded after the message is committed; where
each download stands (pending, downloaded, failed) is kept in the profile
(:mod:`~noisewall.messenger.mediaclient_downloads`), so a download that fails
for a passing reason is retried by later :meth:`MessengerClient.receive` calls
(with backoff) or by :meth:`MessengerClient.retry_downloads`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import mimetypes
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisewall.clock import Clock, SystemClock
from noisewall.messenger import payloads
from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.e2e import (
    E2EError,
    E2EIdentity,
    E2ESessions,
    IdentityChangedError,
    KeyBook,
    SqliteSessionStore,
)
from noisewall.messenger.mediaclient import (
    MediaAuthError,
    MediaClient,
    MediaClientError,
    MediaPinError,
    MediaUnavailableError,
)
from noisewall.messenger.mediaclient_downloads import (
    FailureReason,
    MediaDownload,
    MediaDownloads,
    RetryPolicy,
)
from noisewall.messenger.mediacrypto import (
    MediaDescriptor,
    MediaDescriptorError,
    MediaIntegrityError,
    MediaKind,
)
from noisewall.messenger.messages import (
    Ack,
    Bundle,
    Delivered,
    FetchBundle,
    Hello,
    Message,
    Ok,
    PublishKeys,
    Register,
    Send,
    Welcome,
    parse_push,
)
from noisewall.messenger.profile import HistoryEntry, OutboxItem, Profile, ProfileError
from noisewall.records.endpoint import Endpoint

log = logging.getLogger(__name__)

MEDIA_KINDS = {"photo": MediaKind.IMAGE, "video": MediaKind.VIDEO, "voice": MediaKind.AUDIO}
ONE_TIME_PREKEYS = 50
REPLENISH_BELOW = 20
RECEIPT_STATUSES = ("delivered", "read", "played")
RECEIPT_LINGER = 0.05  # seconds of quiet after pushes before receipts go out
DELIVERED_BATCH = 256  # queue ids per ``delivered`` notice at most
FLUSH_WINDOW = 32  # outbox messages in flight at once on one connection
MEDIA_WINDOW = 4  # media downloads at once: a stalled one does not hold up the others
MEDIA_RETRIES_PER_RECEIVE = 32  # due downloads retried by one receive call at most


@dataclass(frozen=True)
class Received:
    """A message received and decrypted by :meth:`MessengerClient.receive`.

    ``media`` is a media message's download state after this call; ``retried``
    marks an earlier message whose pending download this call tried again;
    ``key_changed`` says the sender's identity key changed and the new key is
    not accepted yet (sending to the sender is held).
    """

    entry: HistoryEntry
    media: MediaDownload | None = None
    retried: bool = False
    key_changed: bool = False

    @property
    def media_path(self) -> Path | None:
        """The downloaded media file, if there is one (yet)."""
        return None if self.media is None or self.media.state != "downloaded" else self.media.path

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready view."""
        view = self.entry.as_json()
        if self.media is not None:
            view["media"] = self.media.as_json()
        if self.media_path is not None:
            view["file"] = str(self.media_path)
        if self.retried:
            view["retried"] = True
        if self.key_changed:
            view["key_changed"] = True
        return view


@dataclass
class _PendingAcks:
    """Pushes committed locally whose server notice and senders' receipts are still due."""

    queue_ids: list[int] = field(default_factory=list)
    delivered: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.queue_ids)

    def add(self, pushes: list[Message], results: list[Received]) -> None:
        self.queue_ids.extend(push.queue_id for push in pushes)
        for result in results:
            self.delivered.setdefault(result.entry.peer, []).append(result.entry.msg_id)

    def clear(self) -> None:
        self.queue_ids = []
        self.delivered = {}


class MessengerClient:
    """One profile's client; open it with :meth:`open` and use it as a context manager.

    ``clock`` schedules media download retries, following ``media_retry``.
    """

    def __init__(self, profile: Profile, socks5: Endpoint | None = None, *,
                 clock: Clock | None = None, media_retry: RetryPolicy | None = None) -> None:
        self.profile = profile
        self.socks5 = socks5
        self.clock = clock or SystemClock()
        self._store = SqliteSessionStore(profile.db)
        self.key_book = KeyBook(profile.db)
        """The identity key trusted for each peer (see :mod:`~noisewall.messenger.e2e.trust`)."""
        self._downloads = MediaDownloads(profile, media_retry)
        self._connection: ChatConnection | None = None
        self._welcome = Welcome(None, None)
        self._sessions: E2ESessions | None = None
        self._flush_lock = asyncio.Lock()
        # Acks from the server not yet written: (recipient, msg_id, status) by msg_id.
        self._acks: dict[str, tuple[str, str, str]] = {}

    @classmethod
    def open(cls, folder: Path, socks5: Endpoint | None = None, *,
             clock: Clock | None = None,
             media_retry: RetryPolicy | None = None) -> MessengerClient:
        """The client of the profile in ``folder`` (created if new); both channels may go
        through a SOCKS5 proxy (a censor's gateway, a tunnel's entry)."""
        return cls(Profile(folder), socks5, clock=clock, media_retry=media_retry)

    async def __aenter__(self) -> MessengerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection and the profile."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        if self._acks:
            with self.profile.transaction():
                self._write_acks()
        self.profile.close()

    def _write_acks(self) -> None:
        """Write the server's acks into the open transaction.

        Acks ride along with the next transaction instead of costing a commit
        each: if the process dies first, the message is sent again and the
        server, which remembers (sender, message id), acks it without
        delivering it twice.
        """
        if self._acks:
            self.profile.acked(list(self._acks.values()))
            self._acks.clear()

    def _unacked(self) -> list[OutboxItem]:
        return self.profile.outbox(skip=self._acks)

    # --- identity and connection --------------------------------------

    @property
    def name(self) -> str:
        """This profile's account name."""
        return self.profile.require("name")

    async def _connect(self) -> ChatConnection:
        if self._connection is not None:
            return self._connection
        host, _, port = self.profile.require("server").rpartition(":")
        cached = self.profile.get("server_key")
        framing = self.profile.get("framing") or "noisesocket"
        connection = await ChatConnection.open(
            host, int(port), self.profile.noise_static(), bytes.fromhex(cached) if cached else None,
            framing="wa" if framing == "wa" else "noisesocket", socks5=self.socks5,
        )
        if connection.server_key is not None:
            self.profile.set("server_key", connection.server_key.hex())
        self._connection = connection
        self._welcome = await connection.call(Hello(), Welcome)
        return connection

    def _e2e(self) -> E2ESessions:
        if self._sessions is None:
            identity = E2EIdentity.load_or_create(self._store, self.name, ONE_TIME_PREKEYS)
            self._sessions = E2ESessions(identity, self._store, self.key_book)
        return self._sessions

    @property
    def identity(self) -> E2EIdentity:
        """This profile's end-to-end identity (its key is what peers' safety numbers show)."""
        return self._e2e().identity

    async def register(self, name: str, server: str, *, media_url: str | None = None,
                       framing: str = "noisesocket") -> Welcome:
        """Create the account ``name`` on ``server`` (HOST:PORT) and publish E2E keys.

        ``media_url`` overrides the media address the server announces (e.g. to
        reach it through a censor's route); the pinned fingerprint still comes
        from the server over the Noise channel.
        """
        existing = self.profile.get("name")
        if existing is not None and existing != name:
            raise ProfileError(f"{self.profile.folder} is already registered as {existing!r}")
        self.profile.set("server", server)
        self.profile.set("framing", framing)
        if media_url is not None:
            self.profile.set("media_url", media_url)
        connection = await self._connect()
        self._welcome = await connection.call(Register(name), Welcome)
        self.profile.set("name", name)
        identity = self._e2e().identity
        await connection.call(PublishKeys(identity.publish_bundle()), Ok)
        return self._welcome

    async def _replenish(self) -> None:
        """Top up the directory's one-time prekeys when the server runs low."""
        available = self._welcome.one_time_prekeys
        if available is None or available >= REPLENISH_BELOW:
            return
        fresh = self._e2e().top_up_one_time_prekeys(ONE_TIME_PREKEYS - available)
        bundle = self._e2e().identity.publish_bundle(include_one_time_prekeys=False)
        connection = await self._connect()
        reply = await connection.call(PublishKeys({**bundle, "one_time_prekeys": fresh}), Ok)
        self._welcome = dataclasses.replace(self._welcome,
                                            one_time_prekeys=reply.one_time_prekeys)

    # --- sending -------------------------------------------------------

    async def _fetch_bundle(self, peer: str) -> Mapping[str, Any]:
        connection = await self._connect()
        return (await connection.call(FetchBundle(peer), Bundle)).bundle

    async def _send_payload(self, to: str, payload: dict[str, Any],
                            record: bool = True) -> str:
        payload = payloads.stamped(payload, time.time())
        msg_id = str(payload["id"])

        def keep(envelope: dict[str, Any]) -> None:
            # Committed with the ratchet step: a crash leaves both or neither.
            self._write_acks()
            if record:
                self.profile.record(to, msg_id, "out", payload["kind"], payload,
                                    status="queued")
            self.profile.queue(msg_id, to, envelope)

        await payloads.seal(self._e2e(), to, payload, self._fetch_bundle, on_saved=keep)
        await self.flush()
        return msg_id

    async def flush(self, attempts: int = 3) -> int:
        """Send the outbox; returns how many messages remain unacknowledged.

        The waiting messages go out pipelined (at most ``FLUSH_WINDOW`` at a
        time) in outbox order; one flush runs at a time, so concurrent senders'
        messages join the next one instead of being sent twice. The server's
        acks (status "sent", removal from the outbox) are written with the
        client's next transaction or at :meth:`close`.
        """
        async with self._flush_lock:
            for attempt in range(attempts):
                try:
                    await self._send_outbox(await self._connect())
                    return 0
                except (OSError, ConnectionError, TimeoutError, ChatError):
                    with self.profile.transaction():
                        self.profile.attempted([item.msg_id for item in self._unacked()])
                    if self._connection is not None:
                        await self._connection.close()
                        self._connection = None
                    await asyncio.sleep(0.2 * 2**attempt)  # backoff, bounded by ``attempts``
            return len(self._unacked())

    async def _send_outbox(self, connection: ChatConnection) -> None:
        items = self._unacked()
        if not items:
            return
        window = asyncio.Semaphore(FLUSH_WINDOW)

        async def send(item: OutboxItem) -> None:
            async with window:
                try:
                    await connection.call(Send(item.recipient, item.msg_id, item.envelope),
                                          Ack)
                except ChatError as exc:
                    if exc.code != "unknown_recipient":
                        raise
                    status = "failed"
                else:
                    status = "sent"
                self._acks[item.msg_id] = (item.recipient, item.msg_id, status)

        outcomes = await asyncio.gather(*(send(item) for item in items), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the first failure; the others went down with the connection

    def queued(self, msg_id: str) -> bool:
        """True while a sent message still waits in the outbox for the server's ack."""
        return any(item.msg_id == msg_id for item in self._unacked())

    async def send_text(self, to: str, text: str) -> str:
        """Send a text message; returns its id."""
        return await self._send_payload(to, payloads.text(text))

    async def send_location(self, to: str, lat: float, lon: float, label: str | None) -> str:
        """Send a location."""
        return await self._send_payload(to, payloads.location(lat, lon, label))

    def _media_client(self) -> MediaClient:
        media = self._welcome.media
        if not media:
            raise ProfileError("the server offers no media endpoint")
        url = self.profile.get("media_url") or media["url"]
        try:
            return MediaClient(url, media["token"], bytes.fromhex(media["fingerprint"]),
                               socks5=self.socks5, server_name=media.get("server_name"))
        except ValueError as exc:
            raise ProfileError(f"the server's media endpoint is unusable: {exc}") from None

    async def send_media(self, to: str, kind: str, path: Path) -> str:
        """Encrypt ``path``, upload it over HTTPS, send its key end to end."""
        if not path.is_file():
            raise ProfileError(f"{path}: no such file")
        await self._connect()
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        async with self._media_client() as media:
            descriptor = await media.upload_media(path, MEDIA_KINDS[kind], mime)
        return await self._send_payload(to, {"kind": kind, "media": descriptor.to_dict(),
                                             "name": path.name})

    async def send_receipt(self, to: str, status: str, ids: list[str]) -> None:
        """Tell ``to`` that messages were delivered, read or played (end to end).

        Not sent while the identity key of ``to`` changed and is not accepted.
        """
        try:
            await self._send_payload(to, payloads.receipt(status, ids), record=False)
        except IdentityChangedError:
            log.info("%s receipt to %s held back: its identity key changed", status, to)

    # --- receiving -----------------------------------------------------

    async def receive(self, wait: float = 2.0) -> list[Received]:
        """Send the outbox, then take every waiting message (up to ``wait`` s), decrypt, store.

        Pushes that arrived together are handled as one batch: decrypted, then
        the sessions and the history are committed in one transaction. Only
        after that commit is the server told they were delivered, and the
        senders get their delivered receipts: once the pushes pause for
        ``RECEIPT_LINGER`` seconds (or at the end, or every
        ``DELIVERED_BATCH`` messages), so a burst costs one notice, not one per
        message. A crash before the notice means redelivery, which the
        committed ratchet refuses as a replay: never loss, never a duplicate.

        Media are downloaded after the commit; one that fails stays pending
        (see :mod:`~noisewall.messenger.mediaclient_downloads`) while the
        others go on. At the end, earlier pending downloads that are due are
        tried again and returned too (``retried``).
        """
        await self.flush()
        connection = await self._connect()
        received: list[Received] = []
        acks = _PendingAcks()
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(min(remaining, RECEIPT_LINGER) if acks else remaining):
                    pushes = [await connection.pushes.get()]
            except TimeoutError:
                await self._acknowledge(connection, acks)
                continue
            while not connection.pushes.empty():
                pushes.append(connection.pushes.get_nowait())
            typed = [parse_push(push) for push in pushes]
            messages = [push for push in typed if isinstance(push, Message)]
            results = await self._accept_batch(messages)
            received.extend(results)
            acks.add(messages, results)
            if len(acks.queue_ids) >= DELIVERED_BATCH:
                await self._acknowledge(connection, acks)
            if len(messages) < len(pushes):
                break
        await self._acknowledge(connection, acks)
        received.extend(await self._retry(
            self._downloads.due(self.clock.now(), MEDIA_RETRIES_PER_RECEIVE)))
        await self._replenish()
        return received

    async def _acknowledge(self, connection: ChatConnection, acks: _PendingAcks) -> None:
        """Tell the server which pushes are stored, and the senders what was delivered."""
        if acks.queue_ids:
            await connection.notify(Delivered(acks.queue_ids))
        for peer, ids in acks.delivered.items():
            await self.send_receipt(peer, "delivered", ids)
        acks.clear()

    async def _accept_batch(self, pushes: list[Message]) -> list[Received]:
        """Decrypt ``pushes``, commit sessions and history together, then fetch media."""
        e2e = self._e2e()
        opened: list[HistoryEntry] = []
        now = self.clock.now()
        for push in pushes:
            sender = push.sender
            try:
                payload = await payloads.open_sealed(e2e, sender, push.envelope, persist=False)
                kind = str(payload["kind"])
                entry = HistoryEntry(sender, str(payload["id"]), "in", kind, payload,
                                     float(payload.get("ts") or time.time()), "received")
                if kind in MEDIA_KINDS:  # a bad descriptor is dropped here, not after the commit
                    MediaDescriptor.from_dict(payload["media"])
            except (E2EError, ValueError, KeyError, TypeError):  # MediaDescriptorError too
                continue  # undecryptable or malformed: dropped, never shown
            opened.append(entry)
        new: list[HistoryEntry] = []
        try:
            with self.profile.transaction():
                e2e.persist()
                self._write_acks()
                for entry in opened:
                    if entry.kind == "receipt":
                        self._apply_receipt(entry)
                    elif self.profile.record(entry.peer, entry.msg_id, "in", entry.kind,
                                             entry.body, status=entry.status, ts=entry.ts):
                        new.append(entry)  # not a duplicate
                        if entry.kind in MEDIA_KINDS:
                            # Committed with the message: a download cut short by anything,
                            # a crash included, is retried, never forgotten.
                            self._downloads.add(entry.peer, entry.msg_id, now)
        except BaseException:
            e2e.discard_unsaved()
            raise
        media = await self._fetch([entry for entry in new if entry.kind in MEDIA_KINDS])
        changed = {peer for peer in {entry.peer for entry in new}
                   if (trusted := self.key_book.get(peer)) and trusted.changed_key is not None}
        return [Received(entry, media.get((entry.peer, entry.msg_id)),
                         key_changed=entry.peer in changed) for entry in new]

    def _apply_receipt(self, entry: HistoryEntry) -> None:
        status, ids = entry.body.get("status"), entry.body.get("ids")
        if status in RECEIPT_STATUSES and isinstance(ids, list):
            for acked_id in ids:
                self.profile.set_status(entry.peer, str(acked_id), "out", str(status))

    async def _retry(self, due: list[tuple[HistoryEntry, MediaDownload]]) -> list[Received]:
        """Download again; the outcome of each as a ``retried`` :class:`Received`."""
        media = await self._fetch([entry for entry, _ in due])
        return [Received(entry, media[entry.peer, entry.msg_id], retried=True)
                for entry, _ in due]

    async def retry_downloads(self, msg_ids: Sequence[str] = ()) -> list[Received]:
        """Try pending media downloads again now, whatever their backoff says.

        With ``msg_ids``, those messages only, including downloads that failed
        after every attempt (a tampered or refused blob is not tried again, only
        reported); without, every pending download.
        """
        if msg_ids:
            found = self._downloads.for_messages(msg_ids)
            missing = set(msg_ids) - {download.msg_id for _, download in found}
            if missing:
                raise ProfileError(f"no received media message {sorted(missing)[0]!r}")
        else:
            found = self._downloads.due(math.inf)
        todo = [(entry, download) for entry, download in found if download.retryable]
        if todo:
            await self._connect()  # the media address and token come with the welcome
        retried = {(item.entry.peer, item.entry.msg_id): item for item in await self._retry(todo)}
        return [retried.get((entry.peer, entry.msg_id)) or Received(entry, download)
                for entry, download in found]

    def media_downloads(self) -> dict[tuple[str, str], MediaDownload]:
        """Every received media message's download state, by ``(peer, msg_id)``."""
        return self._downloads.all()

    async def _fetch(self, entries: list[HistoryEntry]) -> dict[tuple[str, str], MediaDownload]:
        """Download the media of ``entries`` (committed messages), each on its own.

        One failure never stops the others: each outcome goes to the
        downloads table, and the new states come back by ``(peer, msg_id)``.
        """
        if not entries:
            return {}
        try:
            client = self._media_client()
        except ProfileError as exc:  # no media endpoint this time: all of them wait
            now = self.clock.now()
            return {(entry.peer, entry.msg_id): self._downloads.failed(
                entry.peer, entry.msg_id, "unavailable", str(exc), now) for entry in entries}
        window = asyncio.Semaphore(MEDIA_WINDOW)
        async with client as media:

            async def fetch(entry: HistoryEntry) -> MediaDownload:
                async with window:
                    return await self._download(media, entry)

            outcomes = await asyncio.gather(*(fetch(entry) for entry in entries))
        return {(download.peer, download.msg_id): download for download in outcomes}

    async def _download(self, media: MediaClient, entry: HistoryEntry) -> MediaDownload:
        """Fetch one message's media; record and return how it went."""
        name = Path(str(entry.body.get("name") or "media")).name  # never a path from the peer
        dest = self.profile.media_dir / f"{entry.msg_id}-{name}"
        reason: FailureReason
        try:
            descriptor = MediaDescriptor.from_dict(entry.body["media"])
            self.profile.media_dir.mkdir(exist_ok=True, mode=0o700)
            await media.download_media(descriptor, dest)
        except MediaIntegrityError as exc:
            # Tampering: the same blob would fail the same way, so it is never retried.
            reason, error = "integrity", f"integrity check failed: {exc}"
        except (MediaUnavailableError, MediaAuthError, MediaPinError, OSError) as exc:
            # May pass: a network failure, a token that died with its chat session, an
            # interception (the pin is checked before any request), a full disk.
            reason, error = "unavailable", str(exc)
        except (MediaClientError, MediaDescriptorError) as exc:  # no such blob, too large...
            reason, error = "refused", str(exc)
        else:
            return self._downloads.downloaded(entry.peer, entry.msg_id, dest)
        log.info("media download of message %s from %s failed (%s): %s",
                 entry.msg_id, entry.peer, reason, error)
        return self._downloads.failed(entry.peer, entry.msg_id, reason, error, self.clock.now())

    async def mark(self, msg_id: str, status: str) -> HistoryEntry:
        """Mark a received message read (or played) and tell its sender."""
        entry = self.profile.find(msg_id)
        if entry is None:
            raise ProfileError(f"no received message {msg_id!r}")
        self.profile.set_status(entry.peer, msg_id, "in", status)
        await self.send_receipt(entry.peer, status, [msg_id])
        return entry
