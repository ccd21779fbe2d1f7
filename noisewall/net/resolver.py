"""The lab's DNS resolver: an asyncio shell over :mod:`noisewall.net.dns_answer`, UDP and TCP.

Run as ``python -m noisewall.net.resolver --hosts FILE --address ADDR`` in
the outside namespace (:mod:`noisewall.net.resolver_process` starts and
stops it). It re-reads the hosts table whenever the file changes, prints
``ready`` once both sockets are bound, and stops on SIGTERM or SIGINT
(:func:`~noisewall.service.run_until_interrupted`: exit status 143 or 130).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import struct
import sys
from pathlib import Path
from typing import cast

from noisewall.net.dns_answer import answer
from noisewall.net.hosts import parse_hosts
from noisewall.service import run_until_interrupted

log = logging.getLogger(__name__)

DNS_PORT = 53
TCP_IDLE_SECONDS = 10.0
"""A TCP client that sends nothing for this long is closed (RFC 7766 suggests seconds)."""


class HostsTable:
    """The hosts file, re-read when its modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._hosts: dict[str, ipaddress.IPv4Address] = {}

    def current(self) -> dict[str, ipaddress.IPv4Address]:
        """The table as the file has it now (the last good one if the file is unreadable)."""
        try:
            status = self._path.stat()
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp != self._stamp:
                self._hosts = parse_hosts(self._path.read_text())
                self._stamp = stamp
        except FileNotFoundError:
            self._hosts, self._stamp = {}, None
        except ValueError as exc:
            log.warning("hosts table %s unreadable, keeping the last one: %s", self._path, exc)
        return self._hosts


class _UdpResolver(asyncio.DatagramProtocol):
    def __init__(self, table: HostsTable) -> None:
        self._table = table
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = answer(data, self._table.current())
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)


async def _serve_tcp(table: HostsTable, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            (length,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2),
                                                                   TCP_IDLE_SECONDS))
            query = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_SECONDS)
            response = answer(query, table.current())
            if response is None:
                break
            writer.write(struct.pack("!H", len(response)) + response)
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(hosts_file: Path, address: str, port: int = DNS_PORT) -> None:
    """Answer on ``address:port`` (UDP and TCP) until cancelled."""
    table = HostsTable(hosts_file)
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(lambda: _UdpResolver(table),
                                                 local_addr=(address, port))
    tcp = await asyncio.start_server(lambda r, w: _serve_tcp(table, r, w), address, port)
    print("ready", flush=True)
    try:
        await loop.create_future()
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry of the resolver process."""
    parser = argparse.ArgumentParser(prog="python -m noisewall.net.resolver",
                                     description="The noisewall lab network's DNS resolver.")
    parser.add_argument("--hosts", type=Path, required=True, help="hosts.json to answer from")
    parser.add_argument("--address", required=True, help="address to listen on")
    parser.add_argument("--port", type=int, default=DNS_PORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run_until_interrupted(serve(args.hosts, args.address, args.port))
    except OSError as exc:
        print(f"resolver: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
