"""The chat server: accounts bound to Noise static keys, key directory, store-and-forward.

Clients reach it over NoiseSocket (or WA framing) with Noise Pipes: first
contact ``Noise_XX_25519_AESGCM_SHA256``, then ``IK`` with the server key they
cached, falling back to ``XXfallback`` when that key is stale. A connection is
authenticated by its static key alone; ``register`` binds a name to it.

Until it has an account a connection is on probation
(:class:`~noisewall.messenger.limits.ConnectionLimits`): it must register within
``auth_timeout``, holds at most ``unregistered_hold`` bytes of a message, and
only ``max_unregistered`` such connections are admitted at once, so strangers
cannot crowd out account holders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from noisewall.clock import Clock
from noisewall.messenger import fragments, messages, wire
from noisewall.messenger.limits import ConnectionLimits, StoreLimits
from noisewall.messenger.messages import (
    Ack,
    AddMember,
    Bundle,
    CreateGroup,
    Delivered,
    Error,
    FetchBundle,
    Hello,
    Link,
    Ok,
    PublishKeys,
    Register,
    Reply,
    Send,
    SendGroup,
    Welcome,
)
from noisewall.messenger.pipes import server_settings
from noisewall.messenger.store import (
    DEFAULT_TTL,
    ChatStore,
    NameTakenError,
    Queued,
    QuotaExceededError,
    StoreUnavailableError,
    UnknownRecipientError,
)
from noisewall.messenger.wechat.filters import FilterLists
from noisewall.messenger.wechat.mode import Mode, wechat_mode
from noisewall.messenger.wire import WireError
from noisewall.noise import KeyPair, NoiseError, dh_function
from noisewall.noise.keys import load_or_create_private_key
from noisewall.noise.stream import Framing, NoiseServer, NoiseStream
from noisewall.private_files import private_dir
from noisewall.ratelog import RateLimitedLog
from noisewall.records.endpoint import Endpoint
from noisewall.service import Service

log = logging.getLogger("noisewall.messenger")

KEY_FILE = "noise_static.key"
EXPIRY_PERIOD = 3600.0
#: Sends one connection may have in flight (awaiting their commit) at once.
SEND_WINDOW = 64
#: Seconds the last words to a refused connection may take to leave.
REFUSAL_TIMEOUT = 1.0


def load_or_create_static_key(data_dir: Path) -> KeyPair:
    """The server's Noise static key pair from DIR (a new DIR is 0700; the key file 0600)."""
    private_dir(data_dir)
    return load_or_create_private_key(data_dir / KEY_FILE, dh_function("25519"))


@dataclass(eq=False)
class _Client:
    """One connected client."""

    stream: NoiseStream
    reassembler: fragments.Reassembler
    deadline: asyncio.Timeout
    account: str | None = None
    on_probation: bool = False
    media_token_digest: bytes | None = None
    pushed: set[int] = field(default_factory=set)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    window: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SEND_WINDOW))
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def send(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await fragments.send(self.stream, wire.encode(message))


def _error_reply(error: Exception) -> Error:
    """The ``error`` reply for a request that failed with ``error`` (its message is for users)."""
    if isinstance(error, WireError):
        return Error(error.code, str(error))
    if isinstance(error, QuotaExceededError):
        return Error("quota_exceeded", str(error))
    return Error("unavailable", f"{error}; try again")


#: Where the chat server listens unless told (XMPP's client port, as WhatsApp's chat used).
DEFAULT_LISTEN = Endpoint("127.0.0.1", 5222)


class ChatServer(Service):
    """The messenger's chat endpoint over one data directory, listening on ``listen``.

    Use ``async with ChatServer(...) as chat`` (``chat.address``). Set
    :attr:`media` before entering, so that every client hears of the media server.
    """

    def __init__(self, data_dir: Path, *, listen: Endpoint = DEFAULT_LISTEN,
                 framing: Framing = "noisesocket",
                 ttl: float = DEFAULT_TTL, media: dict[str, Any] | None = None,
                 limits: ConnectionLimits | None = None,
                 store_limits: StoreLimits | None = None, mode: Mode = "e2e",
                 filters: FilterLists | None = None, clock: Clock | None = None) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.static = load_or_create_static_key(data_dir)
        self.store = ChatStore(data_dir / "chat.sqlite3", ttl=ttl, limits=store_limits)
        self.limits = limits if limits is not None else ConnectionLimits()
        self._close_log = RateLimitedLog(log, burst=self.limits.log_burst,
                                         period=self.limits.log_period)
        self._unregistered = 0
        self.framing: Framing = framing
        # {"url", "fingerprint" (hex), "server_name" (or None)} once a media server runs
        self.media = media
        # None for the E2E default: it cannot read messages, so filter lists cannot act.
        self.wechat = wechat_mode(mode, data_dir, filters, clock)
        self._online: dict[str, _Client] = {}
        self._media_tokens: dict[bytes, str] = {}
        self._server: NoiseServer | None = None
        self._expiry: asyncio.Task[None] | None = None
        self._pushes: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> Endpoint:
        """The bound chat host and port (once started)."""
        assert self._server is not None, "start it first"
        return self._server.address

    @property
    def connections(self) -> int:
        """Open client connections."""
        return self._server.connections if self._server is not None else 0

    async def start(self) -> Self:
        """Listen on :attr:`listen`."""
        self._server = await NoiseServer(self._handle, self.listen,
                                         server_settings(self.static), framing=self.framing,
                                         handshake_timeout=10.0, on_close=self._log_close,
                                         max_connections=self.limits.max_connections).start()
        self._expiry = asyncio.get_running_loop().create_task(self._expire_periodically())
        return self

    async def close(self) -> None:
        """Close every connection and the store."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self._server is not None:
            await self._server.close()
        self.store.close()
        if self.wechat is not None:
            self.wechat.close()

    def authorize_media(self, token: str) -> str | None:
        """The account a media bearer token belongs to (looked up by digest, not by secret)."""
        return self._media_tokens.get(hashlib.sha256(token.encode("utf-8")).digest())

    async def _expire_periodically(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.store.expire()
            await asyncio.sleep(EXPIRY_PERIOD)

    def _log_close(self, peer: object, reason: str) -> None:
        # One budget per kind of ending (the text before any detail), never per peer.
        kind = reason.split(":", 1)[0]
        self._close_log.log(logging.INFO, kind, "connection from %s closed: %s", peer, reason)

    # --- connections ---------------------------------------------------

    async def _handle(self, stream: NoiseStream) -> None:
        client = _Client(stream, fragments.Reassembler(hold=self.limits.unregistered_hold),
                         asyncio.timeout(self.limits.auth_timeout))
        try:
            async with client.deadline:
                if await self._admit(client):
                    await self._serve(client)
        except TimeoutError:
            if not client.deadline.expired():
                raise
            await self._refuse(client, "auth_timeout",
                               f"register within {self.limits.auth_timeout:g} s")
        finally:
            for task in client.tasks:
                task.cancel()
            self._detach(client)

    async def _admit(self, client: _Client) -> bool:
        """Attach a known key's account, or put a stranger on probation if there is room."""
        remote = client.stream.remote_static
        assert remote is not None  # every pattern the server accepts authenticates the client
        try:
            account = await self.store.account_for_key(remote)
            if account is not None:
                await self._attach(client, account)
                return True
        except StoreUnavailableError as exc:
            await self._refuse(client, "unavailable", str(exc))
            return False
        if self._unregistered >= self.limits.unregistered_cap:
            await self._refuse(client, "server_busy", f"{self._unregistered} connections without "
                               "an account are open, the most this server admits; retry later")
            return False
        self._unregistered += 1
        client.on_probation = True
        return True

    @staticmethod
    async def _refuse(client: _Client, code: str, message: str) -> None:
        """Tell the peer why its connection ends (best effort: it may be gone already, or
        not reading, so the words get a second at most)."""
        with contextlib.suppress(NoiseError, ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(REFUSAL_TIMEOUT):
                await client.send(Error(code, message).to_wire(None))

    async def _serve(self, client: _Client) -> None:
        async for data in fragments.receive_bounded(client.stream, client.reassembler):
            if isinstance(data, fragments.Oversized):
                await client.send(Error("too_large", f"message of {data.size} bytes exceeds "
                                        f"{client.reassembler.hold}").to_wire(None))
                continue
            request_id = None
            reply: Reply | None
            try:
                decoded = wire.decode(data)
                request_id = decoded.get("id")
                request = messages.parse_request(decoded)
                if isinstance(request, Send) and client.account is not None:
                    # Sends run concurrently (a bounded window per connection) so a
                    # client's pipelined messages share group commits; their store
                    # jobs still enter the FIFO in arrival order.
                    await client.window.acquire()
                    task = asyncio.get_running_loop().create_task(
                        self._send_and_reply(client, request_id, request))
                    client.tasks.add(task)
                    task.add_done_callback(client.tasks.discard)
                    continue
                reply = await self._dispatch(client, request)
            except (WireError, StoreUnavailableError, QuotaExceededError) as exc:
                reply = _error_reply(exc)
            if reply is not None:
                await client.send(reply.to_wire(request_id))
        if client.tasks:  # the peer finished sending: let its last acks go out
            await asyncio.wait(set(client.tasks), timeout=10)

    async def _send_and_reply(self, client: _Client, request_id: object,
                              request: Send) -> None:
        try:
            try:
                reply = await self._send(client, request)
            except (WireError, StoreUnavailableError, QuotaExceededError) as exc:
                reply = _error_reply(exc)
            await client.send(reply.to_wire(request_id))
        except (NoiseError, ConnectionError, OSError):
            pass  # the connection is gone; a message already stored stays queued
        finally:
            client.window.release()

    async def _attach(self, client: _Client, account: str) -> None:
        client.account = account
        client.deadline.reschedule(None)
        client.reassembler.hold = wire.MAX_FRAME
        self._end_probation(client)
        previous = self._online.get(account)
        self._online[account] = client
        if previous is not None and previous is not client:
            await previous.stream.close()
        await self._push_pending(client)

    def _end_probation(self, client: _Client) -> None:
        if client.on_probation:
            client.on_probation = False
            self._unregistered -= 1

    def _detach(self, client: _Client) -> None:
        self._end_probation(client)
        if client.account is not None and self._online.get(client.account) is client:
            del self._online[client.account]
        if client.media_token_digest is not None:
            self._media_tokens.pop(client.media_token_digest, None)

    async def _push_pending(self, client: _Client) -> None:
        assert client.account is not None
        after = 0
        while batch := await self.store.pending(client.account, after):
            for queued in batch:
                await self._push(client, queued)
            after = batch[-1].queue_id

    async def _push(self, client: _Client, queued: Queued) -> None:
        if queued.queue_id in client.pushed:
            return
        client.pushed.add(queued.queue_id)
        try:
            await client.send(queued.push().to_wire())
        except (NoiseError, ConnectionError, OSError):
            log.info("push to %s failed; the message stays queued", queued.recipient)

    # --- requests ------------------------------------------------------

    async def _dispatch(self, client: _Client, request: messages.Request) -> Reply | None:
        if isinstance(request, Register):
            return await self._register(client, request)
        if client.account is None:
            if isinstance(request, Hello):
                return Welcome(None, None)
            return Error("not_registered", "register this key first")
        match request:
            case Hello():
                return await self._welcome(client)
            case PublishKeys():
                bundle, prekeys = request.split()
                return Ok(await self.store.publish_keys(client.account, bundle, prekeys))
            case FetchBundle(name=name):
                found = await self.store.take_bundle(name)
                if found is None:
                    return Error("unknown_recipient", f"no keys for {name!r}")
                return Bundle(name, found)
            case Send():
                return await self._send(client, request)
            case Delivered(queue_ids=queue_ids):
                await self.store.delivered(client.account, queue_ids)
            case Link() | CreateGroup() | AddMember() | SendGroup():
                if self.wechat is None:
                    return Error("unsupported", "group chats and linked numbers need a server "
                                 "in WeChat mode (--mode wechat)")
                return await self.wechat.handle(client.account, request, self._deliver)
        return None

    async def _register(self, client: _Client, request: Register) -> Reply:
        name = request.name
        remote = client.stream.remote_static
        assert remote is not None
        if client.account is not None and client.account != name:
            return Error("already_registered", f"this key is registered as {client.account!r}")
        if self.wechat is not None and (
                refused := await self.wechat.registering(name, request.region)) is not None:
            return refused
        try:
            await self.store.register(name, remote)
        except NameTakenError:
            return Error("name_taken", f"the name {name!r} is taken")
        await self._attach(client, name)
        return await self._welcome(client)

    async def _welcome(self, client: _Client) -> Welcome:
        media = None
        if self.media is not None:
            if client.media_token_digest is not None:
                self._media_tokens.pop(client.media_token_digest, None)
            token = secrets.token_urlsafe(32)
            client.media_token_digest = hashlib.sha256(token.encode("utf-8")).digest()
            assert client.account is not None
            self._media_tokens[client.media_token_digest] = client.account
            media = {**self.media, "token": token}
        assert client.account is not None
        stock = await self.store.prekey_stock(client.account)
        return Welcome(client.account, media, stock)

    async def _send(self, client: _Client, request: Send) -> Reply:
        assert client.account is not None
        recipient, msg_id = request.to, request.msg_id
        if self.wechat is not None and (refused := await self.wechat.screen_send(
                client.account, recipient, msg_id, request.envelope)) is not None:
            return refused
        try:
            await self._deliver(client.account, recipient, msg_id, request.envelope)
        except UnknownRecipientError:
            return Error("unknown_recipient", f"no account {recipient!r}")
        # The ack goes out only now: enqueue returned after the commit.
        return Ack(msg_id)

    async def _deliver(self, sender: str, recipient: str, msg_id: str,
                       envelope: dict[str, Any]) -> bool:
        """Store durably and push if the recipient is online; False for a duplicate."""
        queued = await self.store.enqueue(sender, recipient, msg_id, envelope)
        if queued is None:
            return False
        online = self._online.get(recipient)
        if online is not None:
            task = asyncio.get_running_loop().create_task(self._push(online, queued))
            self._pushes.add(task)
            task.add_done_callback(self._pushes.discard)
        return True
