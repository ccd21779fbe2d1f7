"""Probes of the media channel: a TLS handshake, then an encrypted upload and download.

Each media feature (photo, video, voice) first makes an OONI-style TLS
handshake to the media server over the vantage path (df-006: its time, the
SNI sent, the certificate, checked against the pin the server announced over
Noise), then moves a fixed-size sample the way the app does: encrypted,
uploaded over HTTPS, downloaded, verified and decrypted. The throughput is the
blob bytes of both transfers over their time. The handshake and the transfers
send the same SNI: the server name announced with the credentials, else the
URL's host name (none for an IP address), so a censor matching it sees what
the app would send.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import ipaddress
import os
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from noisewall.messenger.connection import ChatConnection, ChatError
from noisewall.messenger.mediaclient import MediaClient, MediaPinError
from noisewall.messenger.mediacrypto import MediaKind, blob_size
from noisewall.messenger.messages import Hello, Welcome
from noisewall.noise import NoiseError
from noisewall.probe.accounts import ProbeAccount
from noisewall.probe.measurement import Trace, kbps
from noisewall.probe.phases import close_writer, failure_of, measure, open_path, phase
from noisewall.probe.settings import ProbeSettings, Vantage
from noisewall.records.endpoint import Endpoint
from noisewall.records.measurement import FeatureResult
from noisewall.selfsigned import dns_name

MEDIA_KIND = {"photo": MediaKind.IMAGE, "video": MediaKind.VIDEO, "voice": MediaKind.AUDIO}
MIME = {"photo": "image/jpeg", "video": "video/mp4", "voice": "audio/ogg"}


@dataclass(frozen=True)
class MediaCredentials:
    """Where the media server is, its certificate pin, and a bearer token valid this round.

    ``server_name`` is the public name the server announced (sent as SNI),
    None if it has none.
    """

    url: str
    token: str
    fingerprint: bytes
    server_name: str | None = None

    @property
    def endpoint(self) -> Endpoint:
        """The media server's host and port."""
        parts = urlsplit(self.url)
        return Endpoint(parts.hostname or "", parts.port or 443)

    @property
    def sni(self) -> str | None:
        """The SNI a client sends: the announced name, else the URL's host unless an address."""
        if self.server_name is not None:
            return self.server_name
        host = self.endpoint[0]
        return None if _is_ip(host) else host


class CredentialSession:
    """A chat connection over the setup path that hands out media tokens.

    The server revokes a token when the connection that got it closes, so the
    connection stays open; a fresh ``hello`` each round gives a fresh token.
    """

    def __init__(self, account: ProbeAccount, settings: ProbeSettings) -> None:
        self.account = account
        self.settings = settings
        self._connection: ChatConnection | None = None

    async def fetch(self) -> MediaCredentials:
        """This round's credentials (reconnects once if the connection was lost)."""
        for attempt in range(2):
            try:
                connection = await self._connect()
                welcome = await connection.call(Hello(), Welcome, self.settings.phase_timeout)
                break
            except (OSError, TimeoutError, NoiseError, ChatError):
                await self.close()
                if attempt:
                    raise
        media = welcome.media
        if media is None:
            raise ValueError("the server offers no media endpoint")
        url = self.settings.media_url or str(media["url"])
        name = media.get("server_name")
        return MediaCredentials(url, str(media["token"]), bytes.fromhex(media["fingerprint"]),
                                None if name is None else dns_name(name))

    async def _connect(self) -> ChatConnection:
        if self._connection is None:
            s = self.settings
            self._connection = await ChatConnection.open(
                *s.server, self.account.static, self.account.server_key, framing=s.framing,
                timeout=s.connect_timeout + s.phase_timeout, socks5=s.setup_socks5)
        return self._connection

    async def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


@functools.cache
def pinned_client_context() -> ssl.SSLContext:
    """The media handshake's client context, made once: no CA store, no certificate checks.

    The media certificate is self-signed and pinned (its fingerprint comes over
    Noise and is compared after the handshake), so the system CA store, which
    ``ssl.create_default_context()`` would parse each time (~50 ms of CPU),
    has nothing to do here.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def sample_file(folder: Path, feature: str, size: int) -> Path:
    """The fixed sample a media feature moves (random bytes, made once per size)."""
    path = folder / f"{feature}-{size}.bin"
    if not path.is_file() or path.stat().st_size != size:
        folder.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".part")
        part.write_bytes(os.urandom(size))
        part.replace(path)
    return path


@dataclass(frozen=True)
class MediaProbe:
    """One media feature's measurement on one vantage path."""

    settings: ProbeSettings
    vantage: Vantage
    trace: Trace
    feature: str
    sample: Path
    scratch: Path

    @property
    def tags(self) -> list[str]:
        return [self.vantage.label, self.feature]

    async def run(self, credentials: MediaCredentials) -> FeatureResult:
        """Handshake, upload, download; the result (failures named, with their phase)."""
        result = FeatureResult()
        return await measure(self._body(credentials, result), result)

    async def _body(self, credentials: MediaCredentials, result: FeatureResult) -> None:
        await self._tls_handshake(credentials, result)
        s = self.settings
        timeout = aiohttp.ClientTimeout(total=s.transfer_timeout,
                                        sock_connect=s.connect_timeout + s.phase_timeout)
        async with MediaClient(credentials.url, credentials.token, credentials.fingerprint,
                               socks5=self.vantage.socks5, timeout=timeout,
                               server_name=credentials.server_name) as client:
            await self._transfer(client, credentials, result)

    async def _tls_handshake(self, credentials: MediaCredentials, result: FeatureResult) -> None:
        s = self.settings
        target = credentials.endpoint
        tid = self.trace.transaction()
        t0 = self.trace.now()
        _, writer = await open_path(target, self.vantage.socks5, self.trace, tid=tid,
                                    tags=self.tags, timeout=s.connect_timeout)
        result.t_connect = self.trace.now() - t0
        server_name = credentials.sni
        context = pinned_client_context()
        address = f"{target[0]}:{target[1]}"
        t1 = self.trace.now()
        upgraded = False
        try:
            async with phase("tls_handshake", s.phase_timeout):
                await writer.start_tls(context, server_hostname=server_name)
                upgraded = True
                tls = writer.get_extra_info("ssl_object")
                der = tls.getpeercert(binary_form=True) if tls is not None else None
                if der is None or not hmac.compare_digest(hashlib.sha256(der).digest(),
                                                          credentials.fingerprint):
                    raise MediaPinError("the media certificate is not the pinned one")
        except Exception as exc:
            self.trace.tls_handshake(address, server_name, t0=t1, failure=failure_of(exc), tid=tid,
                                     tags=self.tags)
            if upgraded:
                await close_writer(writer)
            else:
                # A failed start_tls has closed the socket and left it with asyncio's TLS
                # protocol, so the stream's wait_closed would never return: no waiting.
                writer.transport.abort()
            raise
        cipher = tls.cipher()
        self.trace.tls_handshake(address, server_name, t0=t1, failure=None, tid=tid,
                                 tags=self.tags,
                                 cipher_suite=cipher[0] if cipher else "",
                                 tls_version=tls.version() or "",
                                 negotiated_protocol=tls.selected_alpn_protocol() or "",
                                 peer_certificates=[der])
        result.t_handshake = self.trace.now() - t1
        await close_writer(writer)

    async def _transfer(self, client: MediaClient, credentials: MediaCredentials,
                        result: FeatureResult) -> None:
        s = self.settings
        address = "{}:{}".format(*credentials.endpoint)
        url = credentials.url.rstrip("/") + "/blobs"
        tid = self.trace.transaction()
        t0 = self.trace.now()
        try:
            async with phase("upload", s.transfer_timeout):
                descriptor = await client.upload_media(self.sample, MEDIA_KIND[self.feature],
                                                       MIME[self.feature])
        except Exception as exc:
            self.trace.request("POST", url, address, t0=t0, failure=failure_of(exc), tid=tid,
                               tags=self.tags)
            raise
        size = blob_size(descriptor.size)
        t_up = self.trace.now() - t0
        self.trace.request("POST", url, address, t0=t0, failure=None, tid=tid, tags=self.tags,
                           status=201, body_length=size)
        result.bytes = size
        dest = self.scratch / f"{uuid.uuid4().hex}.{self.feature}"
        t1 = self.trace.now()
        blob_url = f"{url}/{descriptor.blob_id}"
        try:
            async with phase("download", s.transfer_timeout):
                await client.download_media(descriptor, dest)
                same = await asyncio.to_thread(_same_content, dest, self.sample)
                if not same:
                    raise ValueError("the downloaded media differs from the sample")
        except Exception as exc:
            self.trace.request("GET", blob_url, address, t0=t1, failure=failure_of(exc),
                               tid=tid, tags=self.tags)
            raise
        finally:
            dest.unlink(missing_ok=True)
        t_down = self.trace.now() - t1
        self.trace.request("GET", blob_url, address, t0=t1, failure=None, tid=tid,
                           tags=self.tags, status=200, body_length=size)
        result.bytes = 2 * size
        result.t_round_trip = self.trace.now() - t0
        result.throughput_kbps = kbps(2 * size, t_up + t_down)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _same_content(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()
