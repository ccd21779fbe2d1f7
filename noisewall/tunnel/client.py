"""The tunnel client: a local SOCKS5 entry whose streams share one tunnel session.

Applications (the messenger with ``--socks5``, the probes, curl) connect to
``socks_address``; each CONNECT becomes one mux stream over the current
tunnel session, which is opened on first use and reopened when it breaks.
The server's reply code (e.g. ``connection not allowed by ruleset``) is
passed on to the SOCKS5 client unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from noisewall import socks5
from noisewall.noise.errors import NoiseError
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.channel import ByteStream, initiate
from noisewall.tunnel.config import TunnelClientConfig, build_transport
from noisewall.tunnel.listener import Listener
from noisewall.tunnel.session import MuxSession, StreamRefused, TunnelStream
from noisewall.tunnel.splice import splice
from noisewall.tunnel.transports.base import Transport

log = logging.getLogger("noisewall.tunnel")

SOCKS_TIMEOUT = 10.0
#: The first pause before retrying a tunnel server that is not up, and the longest one.
RETRY_FIRST = 0.5
RETRY_MAX = 10.0


class TunnelUnavailable(ConnectionError):
    """The tunnel server could not be reached or did not complete the handshake."""


async def open_session(config: TunnelClientConfig, transport: Transport | None = None,
                       source_host: str | None = None) -> MuxSession:
    """Connect to the tunnel server and authenticate: a started :class:`MuxSession`.

    ``source_host`` overrides ``config.source_host`` (the local address to
    connect from). Raises :class:`TunnelUnavailable` on any failure within
    ``config.connect_timeout``.
    """
    transport = transport or build_transport(config.transport, config.sni, config.alpn)
    source = source_host or config.source_host
    connection: TcpStream | None = None
    stream: ByteStream | None = None
    try:
        async with asyncio.timeout(config.connect_timeout):
            connection = await TcpStream.connect(config.server_host, config.server_port,
                                                 local_addr=(source, 0) if source else None)
            stream = await transport.wrap_client(connection, config.server_key)
            settings = transport.client_settings(config.static, config.server_key)
            channel = await initiate(stream, settings, transport.channel_binding(stream))
    except BaseException as exc:
        # Also when cancelled (the client closing mid-handshake): nothing else holds them
        # (the tls transport's stream owns the socket it took from the connection).
        for opened in (stream, connection):
            if opened is not None:
                opened.close()
        if not isinstance(exc, OSError | TimeoutError | NoiseError | ConnectionError):
            raise
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise TunnelUnavailable(f"tunnel to {config.server_host}:{config.server_port} "
                                f"failed: {reason}") from None
    session = MuxSession(channel, client=True, window=config.window)
    session.start()
    return session


def retry_delays(first: float = RETRY_FIRST, longest: float = RETRY_MAX) -> Iterator[float]:
    """Pauses between connection attempts: doubling from ``first``, never above ``longest``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, longest)


class TunnelClient(Listener):
    """A running tunnel client; use ``async with TunnelClient(config) as client``.

    It listens (``socks_address``) once started; the tunnel itself is opened
    on first use.
    """

    def __init__(self, config: TunnelClientConfig) -> None:
        super().__init__(Endpoint(config.socks_host, config.socks_port))
        self.config = config
        self.transport = build_transport(config.transport, config.sni, config.alpn)
        self._session: MuxSession | None = None
        self._connecting = asyncio.Lock()

    @property
    def socks_address(self) -> Endpoint:
        """Where the SOCKS5 entry listens (once started)."""
        return self.address

    async def close(self) -> None:
        """Close the entry, every proxied connection and the tunnel session."""
        await super().close()
        if self._session is not None:
            await self._session.close()

    async def session(self) -> MuxSession:
        """The live tunnel session, opened (or reopened) if needed."""
        async with self._connecting:
            if self._session is None or self._session.closed:
                if self._session is not None:
                    await self._session.close()
                self._session = await open_session(self.config, self.transport)
            return self._session

    async def wait_for_session(self, patience: float, report: Callable[[str], None],
                               delays: Iterator[float] | None = None) -> MuxSession:
        """The tunnel session, retrying a server that is not up yet for up to ``patience`` s.

        Every failed attempt is reported (its reason and the pause before the
        next one) through ``report``; the pauses follow :func:`retry_delays`.
        Raises :class:`TunnelUnavailable` naming the attempts and the last
        reason once ``patience`` is spent (``0``: one attempt only).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        delays = delays or retry_delays()
        attempt = 1
        while True:
            try:
                return await self.session()
            except TunnelUnavailable as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise TunnelUnavailable(
                        f"gave up after {attempt} attempt{'s' if attempt > 1 else ''} "
                        f"in {patience:g} s: {exc}") from None
                delay = min(next(delays), left)
                report(f"{exc}; retrying in {delay:.1f} s (attempt {attempt + 1})")
                await asyncio.sleep(delay)
                attempt += 1

    async def open_stream(self, host: str, port: int) -> TunnelStream:
        """A stream to ``host:port`` through the tunnel."""
        session = await self.session()
        return await session.open(host, port, self.config.connect_timeout)

    async def handle(self, connection: TcpStream) -> None:
        """Serve one SOCKS5 connection: its CONNECT becomes a tunnel stream."""
        try:
            async with asyncio.timeout(SOCKS_TIMEOUT):
                request = await _read_socks_request(connection)
            if request is None:
                return
            stream = await self._open_for(request, connection)
            if stream is not None:
                await splice(stream, connection)
        except (socks5.Socks5Error, TimeoutError, ConnectionError, OSError,
                asyncio.IncompleteReadError) as exc:
            log.info("socks: connection ended: %s", type(exc).__name__)
        except asyncio.CancelledError:
            pass  # the client is closing
        finally:
            connection.close()

    async def _open_for(self, request: socks5.ConnectRequest,
                        connection: TcpStream) -> TunnelStream | None:
        try:
            stream = await self.open_stream(request.host, request.port)
        except StreamRefused as exc:
            try:
                code = socks5.Reply(exc.reply)
            except ValueError:
                code = socks5.Reply.GENERAL_FAILURE
            connection.write(socks5.reply(code))
            await connection.drain()
            return None
        except ValueError:  # port 0, or a name the tunnel's OPEN frame cannot carry
            connection.write(socks5.reply(socks5.Reply.HOST_UNREACHABLE))
            await connection.drain()
            return None
        except (ConnectionError, OSError, TimeoutError):
            connection.write(socks5.reply(socks5.Reply.NETWORK_UNREACHABLE))
            await connection.drain()
            return None
        connection.write(socks5.reply(socks5.Reply.SUCCEEDED))
        await connection.drain()
        return stream


async def _read_socks_request(connection: TcpStream) -> socks5.ConnectRequest | None:
    """The client's CONNECT request, or None after refusing it (reply already sent)."""

    async def write(data: bytes) -> None:
        connection.write(data)
        await connection.drain()

    try:
        request, early = await socks5.accept_connect_request(
            lambda: _read_some(connection), write)
    except socks5.Socks5Error:
        return None
    connection.unread(early)  # sent without waiting for our reply: it goes through first
    return request


async def _read_some(connection: TcpStream) -> bytes:
    data = await connection.read(512)
    if not data:
        raise asyncio.IncompleteReadError(b"", None)
    return data
