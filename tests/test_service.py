"""The shared service lifecycle and the one "run until interrupted" helper."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from noisewall.records.endpoint import Endpoint
from noisewall.tcp_stream import TcpStream
from noisewall.tunnel.listener import Listener

TIMEOUT = 20

# A child that serves a Listener until a signal, then says what it closed.
CHILD = """
import asyncio, sys
from noisewall.records.endpoint import Endpoint
from noisewall.service import run_until_interrupted
from noisewall.tunnel.listener import Listener

class Idle(Listener):
    async def handle(self, connection):
        await asyncio.sleep(3600)

async def main():
    try:
        async with Idle(Endpoint("127.0.0.1", 0)) as service:
            print(f"listening on {service.address}", flush=True)
            await service.serve_forever()
    finally:
        print("closed", flush=True)

run_until_interrupted(main())
"""


class Counting(Listener):
    """Counts connections and holds each one open until closed."""

    def __init__(self, listen: Endpoint) -> None:
        super().__init__(listen)
        self.ended = 0

    async def handle(self, connection: TcpStream) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            self.ended += 1
            connection.close()


async def test_entering_listens_on_the_configured_address_and_leaving_ends_connections() -> None:
    service = Counting(Endpoint("127.0.0.1", 0))
    async with service:
        address = service.address
        assert isinstance(address, Endpoint) and address.host == "127.0.0.1" and address.port
        _, writer = await asyncio.open_connection(*address)
        for _ in range(200):
            if service.connections:
                break
            await asyncio.sleep(0.01)
        assert service.connections == 1
    assert service.ended == 1 and service.connections == 0
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)
    writer.close()


@pytest.mark.parametrize(("stop", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_closes_the_service_in_order_then_exits_with_the_shell_status(
        tmp_path: Path, stop: signal.Signals, status: int) -> None:
    script = tmp_path / "serve.py"
    script.write_text(CHILD)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), line
        process.send_signal(stop)
        out, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
    assert process.returncode == status, err
    assert out == "closed\n"
    assert "Traceback" not in err
