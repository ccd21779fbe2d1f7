"""A third-party tunnel in the arms race: shadowsocks-libev, run unmodified.

Shadowsocks (AEAD ciphers) is the best known of the "fully encrypted"
protocols the GFW's 2021 rule was built against: from its first byte the
stream is a random salt and ciphertext. :class:`Shadowsocks` starts Debian's
``ss-server`` and ``ss-local`` (each optionally placed by an argv prefix, such
as ``ip netns exec NS``), and :meth:`Shadowsocks.measure` opens fresh
connections through ``ss-local``'s SOCKS5 entry to an echo target beyond the
censor, counting those that fail as :func:`noisewall.tunnel.armsrace.measure_blocking`
does for noisewall's own transports, so both sit in one arms-race table.

``ss-local`` opens one TCP connection to its server per proxied connection,
so each attempt is a new flow for the censor to judge. The password lives in
a 0600 config file, never on a command line that ``ps`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from noisewall.lab.addressplan import spread_sources
from noisewall.lab.services import LabServices
from noisewall.net import Side, tools
from noisewall.ports import free_port
from noisewall.records.endpoint import Endpoint
from noisewall.socks5 import Socks5Error, open_connection
from noisewall.tunnel.armsrace import BlockingResult

__all__ = ["SHADOWSOCKS", "EchoServer", "Shadowsocks", "ShadowsocksUnavailable",
           "shadowsocks_installed", "shadowsocks_race"]

#: The transport's name in the arms-race table.
SHADOWSOCKS = "shadowsocks-libev"
_METHOD = "chacha20-ietf-poly1305"
_START_TIMEOUT = 10.0
_PROBE = b"noisewall arms race\n"


class ShadowsocksUnavailable(RuntimeError):
    """shadowsocks-libev is not installed, or its processes did not start."""


def shadowsocks_installed() -> bool:
    """Whether Debian's shadowsocks-libev (``ss-server``, ``ss-local``) is on PATH."""
    return all(shutil.which(name) for name in ("ss-server", "ss-local"))


@dataclass(frozen=True)
class _Side:
    listen: Endpoint
    prefix: tuple[str, ...]


class Shadowsocks:
    """``ss-server`` listening on ``server``, ``ss-local`` on ``local`` dialling ``entry``.

    ``entry`` is the server as ``ss-local`` reaches it: the server itself, or a
    censor's route to it. Ports 0 are chosen here. Use ``async with``: both
    processes are stopped (and their config removed) on exit.
    """

    def __init__(self, server: Endpoint, local: Endpoint, *, entry: Endpoint | None = None,
                 server_prefix: Sequence[str] = (), local_prefix: Sequence[str] = (),
                 timeout: float = 5.0) -> None:
        if not shadowsocks_installed():
            raise ShadowsocksUnavailable("shadowsocks-libev is not installed "
                                         "(Debian: apt-get install shadowsocks-libev)")
        if (server_prefix and not server.port) or (local_prefix and not local.port):
            raise ValueError("a side placed by a prefix needs its port chosen where it runs "
                             "(free_port there)")
        self._server = _Side(_with_port(server), tuple(server_prefix))
        self._local = _Side(_with_port(local), tuple(local_prefix))
        self._entry = entry
        self._timeout = timeout
        self._processes: list[asyncio.subprocess.Process] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def server(self) -> Endpoint:
        """Where ``ss-server`` listens."""
        return self._server.listen

    @property
    def socks(self) -> Endpoint:
        """``ss-local``'s SOCKS5 entry."""
        return self._local.listen

    async def __aenter__(self) -> Shadowsocks:
        self._dir = tempfile.TemporaryDirectory(prefix="noisewall-ss-")
        entry = self._entry or self.server
        password = secrets.token_urlsafe(24)
        try:
            await self._start("ss-server", self._server, {
                "server": self.server.host, "server_port": self.server.port,
                "password": password, "method": _METHOD, "timeout": int(self._timeout) + 1})
            await self._start("ss-local", self._local, {
                "server": entry.host, "server_port": entry.port,
                "local_address": self.socks.host, "local_port": self.socks.port,
                "password": password, "method": _METHOD, "timeout": int(self._timeout) + 1})
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _start(self, program: str, side: _Side, config: dict[str, object]) -> None:
        assert self._dir is not None
        path = Path(self._dir.name) / f"{program}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(config, file)
        process = await asyncio.create_subprocess_exec(
            *side.prefix, program, "-c", str(path), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._processes.append(process)
        await _wait_listening(process, program, side)

    async def close(self) -> None:
        """Stop both processes; idempotent."""
        for process in self._processes:
            if process.returncode is None:
                process.terminate()
        for process in self._processes:
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._processes.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def measure(self, target: Endpoint, connections: int, timeout: float, *,
                      concurrency: int = 32) -> BlockingResult:
        """``connections`` fresh connections through the tunnel to an echo ``target``.

        An attempt succeeds when a probe line comes back within ``timeout``
        seconds; anything else counts as blocked, by kind.
        """
        if connections <= 0:
            raise ValueError("connections must be positive")
        gate = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()

        async def attempt() -> None:
            async with gate:
                kind = await self._attempt(target, timeout)
                if kind is not None:
                    failures[kind] += 1

        await asyncio.gather(*(attempt() for _ in range(connections)))
        return BlockingResult(SHADOWSOCKS, connections, sum(failures.values()), dict(failures))

    async def _attempt(self, target: Endpoint, timeout: float) -> str | None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await open_connection(
                    self.socks, target.host, target.port)
                writer.write(_PROBE)
                echoed = await reader.readexactly(len(_PROBE))
            return None if echoed == _PROBE else "closed"
        except TimeoutError:
            return "timeout"
        except ConnectionResetError:
            return "reset"
        except (asyncio.IncompleteReadError, Socks5Error, OSError):
            return "closed"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


def _with_port(endpoint: Endpoint) -> Endpoint:
    return endpoint if endpoint.port else Endpoint(endpoint.host, free_port(endpoint.host))


class EchoServer:
    """A TCP echo server (the arms race's target beyond the censor), for ``async with``."""

    def __init__(self, listen: Endpoint) -> None:
        self._listen = listen
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> Endpoint:
        """Where it listens."""
        assert self._server is not None, "start it first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return Endpoint(host, port)

    async def __aenter__(self) -> EchoServer:
        self._server = await asyncio.start_server(self._echo, self._listen.host,
                                                  self._listen.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @staticmethod
    async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _wait_listening(process: asyncio.subprocess.Process, program: str, side: _Side) -> None:
    """Until ``program`` listens on its port (in whatever namespace it runs), or fail clearly."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT
    while loop.time() < deadline:
        if process.returncode is not None:
            assert process.stderr is not None
            error = (await process.stderr.read()).decode("utf-8", "replace").strip()
            raise ShadowsocksUnavailable(f"{program} exited ({process.returncode}): "
                                         f"{error.splitlines()[-1] if error else 'no output'}")
        if _listening(process.pid, side.listen.port):
            return
        await asyncio.sleep(0.02)
    process.kill()
    raise ShadowsocksUnavailable(f"{program} did not listen on {side.listen} within "
                                 f"{_START_TIMEOUT:.0f} s")


_TCP_LISTEN = "0A"


def _listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in process ``pid``'s network namespace."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


async def shadowsocks_race(services: LabServices, connections: int, timeout: float,
                           sources: Sequence[str]) -> BlockingResult:
    """shadowsocks-libev across the in-path censor of ``services``' lab network.

    ``ss-server`` (and an echo target) run outside on the tunnel address,
    ``ss-local`` inside; its connections to the server leave from ``sources``
    in turn, one user address each, like the other transports' attempts.
    """
    network = services.sides.network
    if network is None:
        raise ShadowsocksUnavailable("the shadowsocks arms race needs a lab network (--net)")
    sides, host = services.sides, services.plan.tunnel
    echo = await services.enter(EchoServer(Endpoint(host, 0)), Side.OUTSIDE)
    server = Endpoint(host, await sides.call(Side.OUTSIDE, lambda: free_port(host)))
    local = Endpoint(_LOCAL, await sides.call(Side.INSIDE, lambda: free_port(_LOCAL)))
    tunnel = Shadowsocks(
        server, local, timeout=timeout,
        server_prefix=tools.netns_exec_argv(network.namespace(Side.OUTSIDE), []),
        local_prefix=tools.netns_exec_argv(network.namespace(Side.INSIDE), []))
    with spread_sources(network, server, list(sources)):
        async with tunnel:
            return await sides.run(Side.INSIDE, tunnel.measure(echo.address, connections,
                                                               timeout))


_LOCAL = "127.0.0.1"
