"""A live policy reload: parsed off the event loop, swapped in whole (issue 19)."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest

from noisewall.censor import runner
from noisewall.censor.middlebox import Middlebox, Route
from noisewall.censor.policy import Policy, load_policy
from noisewall.records.endpoint import Endpoint
from tests.censor.capture import http_echo_works


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def _big_policy(entries: int) -> str:
    names = ", ".join(f'"host{i}.example.org"' for i in range(entries))
    return (f"rules:\n  - name: big\n    match: {{sni: [{names}]}}\n    action: reset\n"
            "  - name: open\n    action: allow\n")


@pytest.mark.slow
async def test_flows_keep_moving_while_a_big_policy_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsing: list[tuple[float, float]] = []

    def timed_load(path: Path) -> Policy:
        start = time.monotonic()
        try:
            return load_policy(path)
        finally:
            parsing.append((start, time.monotonic()))

    path = tmp_path / "policy.yaml"
    path.write_text("rules: [{name: first, action: allow}]\n")
    holder = runner.PolicyHolder(path)
    monkeypatch.setattr(runner, "load_policy", timed_load)
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server, Middlebox(holder, decision_log=io.StringIO()) as middlebox:
        entry = await middlebox.add_route(Route(
            Endpoint("127.0.0.1", 0), Endpoint("127.0.0.1", server.sockets[0].getsockname()[1])))
        watcher = asyncio.get_running_loop().create_task(holder.watch(interval=0.05))
        try:
            path.write_text(_big_policy(10_000))
            trips: list[float] = []
            for _ in range(2000):  # until the new policy is in
                assert await http_echo_works(entry.host, entry.port)
                trips.append(time.monotonic())
                if holder.policy.rules[0].name == "big":
                    break
        finally:
            watcher.cancel()
    [(start, end)] = parsing
    during = [t for t in trips if start < t < end]
    print(f"parse {end - start:.2f} s, {len(during)} round trips through the censor meanwhile")
    assert holder.policy.rules[0].name == "big"
    assert len(during) >= 3
