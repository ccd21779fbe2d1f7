"""The tunnel server: authenticates clients by key, then connects their streams onward.

Each accepted connection goes through the transport's wrapping and the
Noise handshake within ``handshake_timeout``. A peer that is not an allowed
client gets the transport's refusal (a cover web page, or a quiet bounded
read and close) and never a tunnel-specific byte. An authenticated client's
streams reach only destinations on the ``allow`` list, checked on the
resolved address that is then connected to (no second lookup); anything else
is refused with the SOCKS5 reply ``connection not allowed by ruleset``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from typing import Self

from noisewall import socks5
from noisewall.noise.errors import NoiseError
from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.channel import TunnelRefused, respond
from noisewall.tunnel.config import TunnelServerConfig, build_transport
from noisewall.tunnel.listener import Listener
from noisewall.tunnel.mux import OpenRequested
from noisewall.tunnel.replay import ReplayFilter
from noisewall.tunnel.session import MuxSession, TunnelStream
from noisewall.tunnel.splice import splice

log = logging.getLogger("noisewall.tunnel")


class TunnelServer(Listener):
    """A running tunnel server; use ``async with TunnelServer(config) as server``."""

    def __init__(self, config: TunnelServerConfig) -> None:
        super().__init__(Endpoint(config.listen_host, config.listen_port))
        self.config = config
        self.transport = build_transport(config.transport, config.cover_sni)
        self.public_key = config.static.public
        self._rules = config.destination_rules()
        self._replay = ReplayFilter()
        self.sessions = 0
        self.refused = 0

    async def start(self) -> Self:
        """Read the replay file (when configured), then listen."""
        self._replay = ReplayFilter(path=self.config.replay_file)
        try:
            return await super().start()
        except BaseException:
            self._replay.close()
            raise

    async def close(self) -> None:
        """Stop serving and close the replay file."""
        await super().close()
        self._replay.close()

    async def handle(self, connection: TcpStream) -> None:
        """Serve one connection: handshake, then its tunnel session (or the refusal)."""
        try:
            await self._serve(connection)
        except asyncio.CancelledError:
            pass  # the server is closing
        except Exception:
            log.exception("tunnel connection failed unexpectedly")
        finally:
            connection.close()

    async def _serve(self, connection: TcpStream) -> None:
        config = self.config
        key = self.public_key
        stream = None
        try:
            async with asyncio.timeout(config.handshake_timeout):
                stream = await self.transport.wrap_server(connection, key)
                channel = await respond(stream, self.transport.server_settings(config.static),
                                        config.clients, self._replay,
                                        self.transport.channel_binding(stream))
        except TunnelRefused as exc:
            self.refused += 1
            log.info("refused a connection: %s", exc)
            if stream is not None:
                await self.transport.refuse(stream, exc.first_bytes, config.refuse_linger)
            return
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError, NoiseError) as exc:
            self.refused += 1
            log.info("dropped a connection during the handshake: %s", type(exc).__name__)
            if stream is not None:  # the tls transport's stream owns the socket now
                stream.close()
            return
        except asyncio.CancelledError:
            if stream is not None:
                stream.close()
            raise
        self.sessions += 1
        session = MuxSession(channel, client=False, window=config.window, on_open=self._open)
        try:
            await session.run()
        finally:
            await session.close()

    async def _open(self, session: MuxSession, request: OpenRequested,
                    stream: TunnelStream) -> None:
        reply = await self._connect_onward(request)
        if isinstance(reply, socks5.Reply):
            session.mux.refuse(request.stream, reply)
            session.forget(request.stream)
            session.flush_soon()
            return
        session.mux.accept(request.stream)
        try:
            await session.flush()
            await splice(stream, reply)
        except (ConnectionError, OSError):
            stream.reset()
        finally:
            reply.close()

    async def _connect_onward(
        self, request: OpenRequested
    ) -> socks5.Reply | TcpStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                infos = await loop.getaddrinfo(request.host, request.port,
                                               type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return socks5.Reply.HOST_UNREACHABLE
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if any(rule.allows(address, request.port) for rule in self._rules):
                break
        else:
            log.info("refused a stream to a destination outside the allow list")
            return socks5.Reply.NOT_ALLOWED
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                return await TcpStream.connect(str(address), request.port)
        except (OSError, TimeoutError):
            return socks5.Reply.CONNECTION_REFUSED
