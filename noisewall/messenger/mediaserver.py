"""The media server: encrypted blobs over HTTPS (TLS 1.3 only), streamed.

Clients upload blobs that :mod:`noisewall.messenger.mediacrypto` already
encrypted end to end, so the server only ever stores ciphertext. It speaks
real HTTPS with a self-signed certificate created on first start
(:func:`ensure_certificate`); clients learn the certificate's SHA-256
fingerprint over the authenticated Noise channel and pin it. A server given a
public name (``server_name``) has it in its certificate, and clients send it
as the TLS SNI, as real media clients do (a censor can match it).

Routes (every one needs ``Authorization: Bearer <token>``; the chat server
issues tokens over the Noise channel and checks them in ``authorize``):

* ``POST /blobs``: the request body is streamed into ``DATA/blobs`` while it is
  counted and hashed; bigger than ``max_size`` answers 413 (at once when
  ``Content-Length`` says so) and leaves nothing behind. Answers 201 with
  ``{"id", "size", "sha256"}``; the id is ``secrets.token_urlsafe(32)``.
* ``GET /blobs/{id}``: streams the blob; 404 for an id that is unknown or not of
  the blob id form, so no path can escape the blob folder.

Slow or silent clients are bounded by :class:`MediaTimeouts`: the TLS handshake
and each request head must arrive within ``header`` seconds, an upload's body
may pause at most ``body`` seconds between reads (408), and a connection with
no request (or with a response its client stopped reading) is closed after
``idle`` seconds.

Errors answer ``{"error": "..."}`` with 400, 401, 404, 408 or 413. Every handler
decodes its input (bearer token, blob id, body) through functions that raise
:class:`~noisewall.messenger.mediarefusals.MediaRequestError`; one
middleware (:mod:`~noisewall.messenger.mediarefusals`) turns it into the
answer and one log line, so no request shape reaches aiohttp's 500 path. Tokens are never
logged.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Self

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from noisewall.messenger.mediacrypto import BLOB_ID_PATTERN, fsync_dir
from noisewall.messenger.mediarefusals import MediaRequestError, http_log, refusals
from noisewall.messenger.mediatimeouts import MediaTimeouts, TimedConnection, timed_requests
from noisewall.private_files import create_private, private_dir
from noisewall.records.endpoint import Endpoint
from noisewall.selfsigned import build_self_signed, dns_name
from noisewall.service import Service

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 64 * 1024 * 1024
CERT_FILE = "media-cert.pem"
KEY_FILE = "media-key.pem"
BLOB_DIR = "blobs"
PART_SUFFIX = ".part"
CERT_COMMON_NAME = "noisewall-media"
CERT_VALIDITY = datetime.timedelta(days=3650)
READ_CHUNK = 64 * 1024
WRITE_BUFFER = 256 * 1024

#: RFC 6750's b64token: what a bearer token may hold. Anything else (bytes that are not
#: ASCII, spaces, controls) is refused before it reaches ``authorize``.
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

Authorize = Callable[[str], str | None]
"""``authorize(token)``: the account name a bearer token belongs to, or None."""


def ensure_certificate(data_dir: Path, server_name: str | None = None) -> tuple[Path, Path, bytes]:
    """The media certificate and key in ``data_dir``, created on first call.

    Returns ``(cert_path, key_path, fingerprint)`` where ``fingerprint`` is the
    SHA-256 of the certificate's DER encoding, what clients pin. The key is
    ECDSA P-256, the certificate self-signed for CN=noisewall-media with
    subject alternative names 127.0.0.1, ::1, localhost and ``server_name``
    (the public name clients send as SNI, if the server has one). Later calls
    reuse the files, so the fingerprint stays the same across restarts; only a
    ``server_name`` the certificate does not name yet makes a new one (clients
    learn its fingerprint over Noise at their next connection, as always).
    """
    data_dir = private_dir(Path(data_dir))
    cert_path = data_dir / CERT_FILE
    key_path = data_dir / KEY_FILE
    if server_name is not None:
        server_name = dns_name(server_name)
    names = list(dict.fromkeys(["localhost", *filter(None, [server_name])]))
    if not (cert_path.is_file() and key_path.is_file()):
        _create_certificate(cert_path, key_path, names)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if server_name is not None and server_name not in _dns_names(cert):
        _create_certificate(cert_path, key_path, names)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    fingerprint = cert.fingerprint(hashes.SHA256())
    return cert_path, key_path, fingerprint


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in san.get_values_for_type(x509.DNSName)]


def _create_certificate(cert_path: Path, key_path: Path, dns_names: list[str]) -> None:
    certificate = build_self_signed(
        CERT_COMMON_NAME, dns_names=dns_names,
        ip_addresses=[ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")],
        validity=CERT_VALIDITY)
    # The key first, then the certificate: a certificate on disk implies its key is.
    _write_atomic(key_path, certificate.key_pem, mode=0o600)
    _write_atomic(cert_path, certificate.cert_pem, mode=0o600)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PART_SUFFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context that speaks TLS 1.3 and nothing older."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_path, key_path)
    return context


#: Where a media server listens unless told: loopback, any free port.
ANY_LOOPBACK_PORT = Endpoint("127.0.0.1", 0)


class MediaServer(Service):
    """The HTTPS blob store on ``listen``; see the module documentation for its routes.

    Use ``async with MediaServer(...) as media`` (``media.address``).

    ``server_name`` is the public host name the server goes by (as WhatsApp's
    media went to ``mmg.whatsapp.net``), None for none: its certificate names
    it, and :meth:`announcement` tells clients to send it as the TLS SNI
    whatever address they reach the server at. ValueError if it is not a host
    name. ``timeouts`` bounds slow and silent clients (see the module
    documentation).
    """

    def __init__(
        self,
        data_dir: Path,
        authorize: Authorize,
        max_size: int = DEFAULT_MAX_SIZE,
        *,
        server_name: str | None = None,
        timeouts: MediaTimeouts | None = None,
        listen: Endpoint = ANY_LOOPBACK_PORT,
    ) -> None:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / BLOB_DIR
        self.max_size = max_size
        self.listen = listen
        self.timeouts = timeouts if timeouts is not None else MediaTimeouts()
        self.server_name = None if server_name is None else dns_name(server_name)
        self._authorize = authorize
        self.cert_path, self.key_path, self.fingerprint = ensure_certificate(
            self.data_dir, self.server_name)
        private_dir(self.blob_dir)
        self.app = web.Application(middlewares=[timed_requests, refusals])
        self.app.router.add_post("/blobs", self._upload)
        self.app.router.add_get("/blobs/{blob_id}", self._download, allow_head=False)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    def announcement(self, url: str) -> dict[str, str]:
        """What the chat server tells clients about this server (with a token added per client).

        ``url`` is where clients connect (``https://HOST:PORT``); ``fingerprint``
        the certificate pin (hex); ``server_name``, only when the server has
        one, the name clients send as SNI.
        """
        offer = {"url": url, "fingerprint": self.fingerprint.hex()}
        if self.server_name is not None:
            offer["server_name"] = self.server_name
        return offer

    @property
    def address(self) -> Endpoint:
        """The bound host and port (once started)."""
        assert self._listener is not None, "start it first"
        host, port = self._listener.sockets[0].getsockname()[:2]
        return Endpoint(str(host), int(port))

    async def start(self) -> Self:
        """Listen on :attr:`listen` (port 0: any free port)."""
        if self._runner is not None:
            raise RuntimeError("the media server is already started")
        self._remove_partial_uploads()
        context = server_ssl_context(self.cert_path, self.key_path)
        # No access log: it would record blob ids; tokens travel in headers only.
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0, logger=http_log,
                               keepalive_timeout=self.timeouts.idle,
                               # A refused body is drained this long at most before closing.
                               lingering_time=self.timeouts.body)
        await runner.setup()
        handlers = runner.server
        assert handlers is not None
        try:
            # Not aiohttp's TCPSite: each connection's protocol goes behind a watchdog, and
            # the TLS handshake gets the header deadline.
            listener = await asyncio.get_running_loop().create_server(
                lambda: TimedConnection(handlers(), self.timeouts), self.listen.host,
                self.listen.port, ssl=context,
                ssl_handshake_timeout=self.timeouts.header)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner, self._listener = runner, listener
        log.info("media server listening on %s:%d", self.listen.host, self.address.port)
        return self

    async def close(self) -> None:
        """Stop listening and close every connection."""
        runner, self._runner = self._runner, None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()

    def _remove_partial_uploads(self) -> None:
        """Uploads interrupted by a crash are never served: remove what they left."""
        for part in self.blob_dir.glob(f"*{PART_SUFFIX}"):
            part.unlink(missing_ok=True)

    def _account(self, request: web.Request) -> str:
        """The account the request's bearer token belongs to; MediaRequestError (401) if none."""
        account = self._authorize(_bearer_token(request))
        if account is None:
            raise _unauthorized()
        return account

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        account = self._account(request)
        declared = request.content_length
        if declared is not None and declared > self.max_size:
            raise _too_large(self.max_size)
        blob_id = secrets.token_urlsafe(32)
        part = self.blob_dir / f".{blob_id}{PART_SUFFIX}"
        committed = False
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        try:
            with os.fdopen(create_private(part), "wb") as out:
                while chunk := await self._body_chunk(request):
                    size += len(chunk)
                    if size > self.max_size:
                        raise _too_large(self.max_size)
                    digest.update(chunk)
                    buffer += chunk
                    if len(buffer) >= WRITE_BUFFER:
                        await asyncio.to_thread(out.write, bytes(buffer))
                        buffer.clear()
                await asyncio.to_thread(_finish, out, bytes(buffer))
            await asyncio.to_thread(_commit, part, self.blob_dir / blob_id)
            committed = True
        except ConnectionError:
            # The client went away mid-body: nothing to keep.
            raise MediaRequestError(
                400, f"upload interrupted after {size} bytes", close=True) from None
        finally:
            if not committed:
                part.unlink(missing_ok=True)
        log.info("blob stored: %d bytes for %s", size, account)
        return web.json_response(
            {"id": blob_id, "size": size, "sha256": digest.hexdigest()}, status=201
        )

    async def _body_chunk(self, request: web.Request) -> bytes:
        """The next piece of the body (b"" at its end); 408 after ``timeouts.body`` s of none."""
        try:
            async with asyncio.timeout(self.timeouts.body):
                return await request.content.read(READ_CHUNK)
        except TimeoutError:
            raise MediaRequestError(
                408, f"no body bytes for {self.timeouts.body:g} s", close=True) from None

    async def _download(self, request: web.Request) -> web.StreamResponse:
        self._account(request)
        blob_id = request.match_info["blob_id"]
        path = self.blob_dir / blob_id
        if not BLOB_ID_PATTERN.fullmatch(blob_id) or not path.is_file():
            raise MediaRequestError(404, "no such blob")
        # Written here rather than by aiohttp's FileResponse: over TLS its sendfile path swaps
        # the connection's protocol out, which hides a client that stops reading from the
        # connection's watchdog (and it reads the file 16 KiB at a time).
        response = web.StreamResponse(headers={
            "Content-Type": "application/octet-stream", "Cache-Control": "no-store"})
        sent = 0
        with path.open("rb") as blob:
            response.content_length = os.fstat(blob.fileno()).st_size
            try:
                await response.prepare(request)
                while chunk := await asyncio.to_thread(blob.read, WRITE_BUFFER):
                    await response.write(chunk)
                    sent += len(chunk)
            except ConnectionError:
                # The client went away (or stopped reading and was cut): nothing to answer.
                log.info("download abandoned after %d of %d bytes", sent, response.content_length)
        return response  # aiohttp ends it (and ignores a connection already gone)


def _finish(out: BinaryIO, rest: bytes) -> None:
    out.write(rest)
    out.flush()
    os.fsync(out.fileno())


def _commit(part: Path, final: Path) -> None:
    os.replace(part, final)
    fsync_dir(final.parent)


def _bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer TOKEN``; MediaRequestError (401) for any other form."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not BEARER_TOKEN.fullmatch(token):
        raise _unauthorized()
    return token


def _unauthorized() -> MediaRequestError:
    return MediaRequestError(401, "a valid bearer token is required",
                             headers={"WWW-Authenticate": "Bearer"})


def _too_large(max_size: int) -> MediaRequestError:
    # The rest of the body is not read: the connection cannot be reused.
    return MediaRequestError(413, f"the blob is larger than {max_size} bytes", close=True)
