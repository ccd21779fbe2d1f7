"""The media client: streaming upload and download with a pinned certificate.

Every connection pins the media server's certificate by the SHA-256 of its DER
encoding (``aiohttp.Fingerprint``), which the client received over the
authenticated Noise channel. The pin is checked right after the TLS handshake,
before any request (and so before the bearer token) is sent; a mismatch raises
:class:`MediaPinError`.

Bodies are streamed both ways; downloads land in a temporary file beside the
destination and are renamed into place only when complete. The helpers
:meth:`MediaClient.upload_media` and :meth:`MediaClient.download_media`
combine transfer and :mod:`~noisewall.messenger.mediacrypto` so a plaintext
file goes out encrypted, and comes back only once its MAC and hashes verify.

A connector can be injected (for example :class:`Socks5Connector`); the pin is
applied per request, so it holds through any connector.

A media server may go by a public name (``server_name``, which the chat server
announces with the URL and the pin): the client still connects to the URL's
address but sends the name as the TLS SNI, directly and through SOCKS5 alike,
as a real client reaching ``mmg.whatsapp.net`` does. The pin check is the same
either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import secrets
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler

from noisewall import socks5
from noisewall.messenger.mediacrypto import (
    BLOB_ID_PATTERN,
    CHUNK_SIZE,
    HASH_SIZE,
    MediaDescriptor,
    MediaEncryptor,
    MediaKind,
    atomic_writer,
    blob_size,
    decrypt_file,
    new_media_key,
)
from noisewall.records.endpoint import Endpoint
from noisewall.selfsigned import dns_name

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15, sock_read=60)
"""No limit on a whole transfer (files are big), but on connecting and on every read."""

UploadSource = str | os.PathLike[str] | AsyncIterable[bytes]


class MediaClientError(Exception):
    """Base class of the media client's errors."""


class MediaPinError(MediaClientError):
    """The server's certificate is not the pinned one: possibly an interception."""


class MediaAuthError(MediaClientError):
    """The server refused the bearer token (HTTP 401)."""


class MediaNotFoundError(MediaClientError):
    """No blob with that id (HTTP 404)."""


class MediaTooLargeError(MediaClientError):
    """The blob is over the server's size cap (HTTP 413) or the client's own."""


class MediaTransferError(MediaClientError):
    """Any other failure: connection refused or reset, timeout, unexpected answer."""


class MediaUnavailableError(MediaTransferError):
    """A failure that may pass if tried again later: the server unreachable, the connection
    reset or timed out mid-transfer, or an HTTP 5xx (also 408, 429) answer."""


RETRY_LATER_STATUSES = frozenset({408, 429})
"""Client-error statuses that still mean "not now" rather than "never"."""


class _ProxyResolves(AbstractResolver):
    """No local lookup: a host name goes to the SOCKS5 proxy as it is, for the proxy to resolve."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": host, "port": port, "family": family,
                 "proto": 0, "flags": 0}]

    async def close(self) -> None:
        """Nothing to release."""


class _KeepWriter(ResponseHandler):
    """aiohttp's protocol, holding the StreamWriter whose transport it took over: a collected
    StreamWriter closes its transport (Python >= 3.11.5)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter) -> None:
        super().__init__(loop)
        self._writer = writer


class Socks5Connector(aiohttp.TCPConnector):
    """An aiohttp connector that reaches every server through a SOCKS5 proxy (no authentication).

    Unlike aiohttp-socks's connector, which starts TLS with the destination
    address as the server name and so drops a request's ``server_hostname``,
    this one sends that name as the SNI: a media server reached by address
    but known by name looks the same to a censor through a proxy as directly.
    SOCKS refusals surface as :class:`~noisewall.socks5.Socks5Error` inside
    aiohttp's ``ClientConnectorError``.
    """

    def __init__(self, proxy: Endpoint, **kwargs: Any) -> None:
        super().__init__(resolver=_ProxyResolves(), **kwargs)
        self._proxy = proxy

    async def _wrap_create_connection(  # aiohttp's hook for opening a connection
        self,
        *args: Any,
        addr_infos: list[Any],
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        host, port = addr_infos[0][4][:2]
        context: ssl.SSLContext | None = kwargs.get("ssl")
        try:
            async with asyncio.timeout(timeout.sock_connect):
                _, writer = await socks5.open_connection(self._proxy, host, port)
                try:
                    if context is not None:
                        await writer.start_tls(context,
                                               server_hostname=kwargs.get("server_hostname"))
                except BaseException:
                    writer.close()
                    raise
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise client_error(req.connection_key, exc) from exc
        transport = writer.transport
        protocol = _KeepWriter(self._loop, writer)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        return transport, protocol  # type: ignore[return-value]  # a Transport, as aiohttp's


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The server's answer to an upload."""

    blob_id: str
    size: int
    sha256: bytes


class MediaClient:
    """A session with one media server; use as ``async with MediaClient(...) as c``.

    Create it inside a running event loop. ``url`` is the server's base URL
    (``https://host:port``), ``fingerprint`` the SHA-256 of its certificate's
    DER form, ``server_name`` the host name to send as SNI (None: the URL's
    host, which sends none when it is an IP address). ``socks5`` reaches the
    server through that proxy (a :class:`Socks5Connector` the client owns);
    or ``connector`` is any aiohttp connector, which the client closes only if
    ``own_connector``. Bad arguments raise ValueError (and leave nothing open).
    """

    def __init__(
        self,
        url: str,
        token: str,
        fingerprint: bytes,
        *,
        connector: aiohttp.BaseConnector | None = None,
        own_connector: bool = False,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
        server_name: str | None = None,
        socks5: Endpoint | None = None,
    ) -> None:
        if socks5 is not None and connector is not None:
            raise ValueError("give a SOCKS5 proxy or a connector, not both")
        if len(fingerprint) != HASH_SIZE:
            raise ValueError("the certificate fingerprint is the 32-byte SHA-256 of its DER form")
        if not token or not token.isprintable() or any(c.isspace() for c in token):
            raise ValueError("the bearer token must be non-empty printable text without spaces")
        if not url.startswith("https://"):
            raise ValueError(f"the media server URL must be https://, not {url!r}")
        self._base = url.rstrip("/")
        self._pin = aiohttp.Fingerprint(fingerprint)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._tls: dict[str, Any] = {"ssl": self._pin}
        if server_name is not None:
            self._tls["server_hostname"] = dns_name(server_name)
        if socks5 is not None:
            connector, own_connector = Socks5Connector(socks5), True
        self._session = aiohttp.ClientSession(
            connector=connector,
            connector_owner=connector is None or own_connector,
            timeout=timeout,
        )

    async def __aenter__(self) -> MediaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (an injected connector stays open unless handed over)."""
        await self._session.close()

    async def upload(self, source: UploadSource) -> UploadResult:
        """Stream a file (by path) or an async iterable of bytes to the server."""
        if isinstance(source, str | os.PathLike):
            with Path(source).open("rb") as f:
                # A file body gets a Content-Length, so an oversized one is refused at once.
                return await self._post(f)
        return await self._post(source)

    async def _post(self, body: BinaryIO | AsyncIterable[bytes]) -> UploadResult:
        async with self._request("POST", "/blobs", data=body) as response:
            await _check(response, 201)
            try:
                answer = await response.json()
                blob_id = answer["id"]
                size = answer["size"]
                sha256 = bytes.fromhex(answer["sha256"])
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MediaUnavailableError(f"upload answer lost: {exc}") from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise MediaTransferError(f"malformed upload answer: {exc}") from None
        if not (
            isinstance(blob_id, str)
            and BLOB_ID_PATTERN.fullmatch(blob_id)
            and isinstance(size, int)
            and len(sha256) == HASH_SIZE
        ):
            raise MediaTransferError("malformed upload answer")
        return UploadResult(blob_id=blob_id, size=size, sha256=sha256)

    async def download(self, blob_id: str, dest_path: Path, *, max_size: int | None = None) -> int:
        """Stream a blob into ``dest_path`` (atomically); returns its size."""
        if not BLOB_ID_PATTERN.fullmatch(blob_id):
            raise ValueError(f"not a blob id: {blob_id!r}")
        async with self._request("GET", f"/blobs/{blob_id}") as response:
            await _check(response, 200)
            if (
                max_size is not None
                and response.content_length is not None
                and response.content_length > max_size
            ):
                raise MediaTooLargeError(f"the blob is larger than {max_size} bytes")
            size = 0
            with atomic_writer(Path(dest_path)) as out:
                try:
                    async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                        size += len(chunk)
                        if max_size is not None and size > max_size:
                            raise MediaTooLargeError(f"the blob is larger than {max_size} bytes")
                        await asyncio.to_thread(out.write, chunk)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise MediaUnavailableError(f"download interrupted: {exc}") from exc
        return size

    async def upload_media(
        self,
        src_path: Path,
        kind: MediaKind,
        mime: str,
        *,
        media_key: bytes | None = None,
    ) -> MediaDescriptor:
        """Encrypt ``src_path`` while uploading it; the descriptor for the E2E message."""
        encryptor = MediaEncryptor(new_media_key() if media_key is None else media_key, kind)
        result = await self.upload(_encrypting_reader(Path(src_path), encryptor))
        encrypted = encryptor.result
        if result.size != encrypted.blob_size or not hmac.compare_digest(
            result.sha256, encrypted.sha256_blob
        ):
            raise MediaTransferError("the server stored something other than what was sent")
        return encrypted.descriptor(result.blob_id, mime)

    async def download_media(self, descriptor: MediaDescriptor, dest_path: Path) -> None:
        """Download, verify and decrypt into ``dest_path``, or raise leaving no file.

        The blob goes to a temporary file beside ``dest_path`` and is removed
        afterwards; a blob longer than the descriptor allows is refused while
        downloading. Integrity failures raise
        :class:`~noisewall.messenger.mediacrypto.MediaIntegrityError`.
        """
        dest_path = Path(dest_path)
        blob_path = dest_path.with_name(f".{dest_path.name}.{secrets.token_hex(8)}.blob")
        try:
            await self.download(descriptor.blob_id, blob_path, max_size=blob_size(descriptor.size))
            await asyncio.to_thread(
                decrypt_file,
                blob_path,
                dest_path,
                descriptor.media_key,
                descriptor.sha256_plain,
                descriptor.sha256_blob,
                descriptor.kind,
                expected_size=descriptor.size,
            )
        finally:
            blob_path.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _request(
        self, method: str, path: str, **kwargs: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request with the pin and the token; connection failures become typed errors."""
        try:
            response = await self._session.request(
                method, self._base + path, headers=self._headers, **self._tls, **kwargs
            )
        except aiohttp.ServerFingerprintMismatch as exc:
            raise MediaPinError(
                f"the media server at {exc.host}:{exc.port} presented certificate "
                f"sha256 {exc.got.hex()}, not the pinned {exc.expected.hex()}"
            ) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MediaUnavailableError(f"media server unreachable: {exc}") from exc
        async with response:
            yield response


async def _check(response: aiohttp.ClientResponse, expected: int) -> None:
    if response.status == expected:
        return
    try:
        detail = (await response.json()).get("error", "")
    except (aiohttp.ClientError, ValueError, AttributeError, TimeoutError):
        detail = ""
    message = f"HTTP {response.status}" + (f": {detail}" if detail else "")
    if response.status == 401:
        raise MediaAuthError(message)
    if response.status == 404:
        raise MediaNotFoundError(message)
    if response.status == 413:
        raise MediaTooLargeError(message)
    if response.status >= 500 or response.status in RETRY_LATER_STATUSES:
        raise MediaUnavailableError(message)
    raise MediaTransferError(message)


async def _encrypting_reader(
    path: Path, encryptor: MediaEncryptor, chunk_size: int = CHUNK_SIZE
) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            out = encryptor.update(chunk)
            if out:
                yield out
    yield encryptor.finalize()


async def upload(
    url: str,
    token: str,
    fingerprint: bytes,
    source: UploadSource,
    *,
    connector: aiohttp.BaseConnector | None = None,
) -> str:
    """Upload one blob (a path or an async iterable of bytes); returns its id."""
    async with MediaClient(url, token, fingerprint, connector=connector) as client:
        return (await client.upload(source)).blob_id


async def download(
    url: str,
    token: str,
    fingerprint: bytes,
    blob_id: str,
    dest_path: Path,
    *,
    connector: aiohttp.BaseConnector | None = None,
    max_size: int | None = None,
) -> int:
    """Download one blob into ``dest_path`` (atomically); returns its size."""
    async with MediaClient(url, token, fingerprint, connector=connector) as client:
        return await client.download(blob_id, dest_path, max_size=max_size)
