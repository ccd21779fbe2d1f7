"""The fully-encrypted rule in the path, against real programs: it catches shadowsocks-libev,
and never TLS (curl), HTTP (curl) or SSH (OpenSSH), even when it inspects every flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from noisewall.lab.thirdparty import EchoServer, Shadowsocks
from noisewall.net import Network, Side, add_host, tools
from noisewall.net.loops import NamespaceLoop
from noisewall.records.endpoint import Endpoint
from tests.censor.test_inpath import TIMEOUT, _sshd, censor, decisions, https_servers, run_in
from tests.netns import require_program

#: Every flow inspected (probability 1): any TLS, HTTP or SSH flow it caught would fail here.
POLICY = """rules:
  - name: fet
    match: {fully_encrypted: true}
    action: drop
"""
ROUNDS = 30
SS_CONNECTIONS = 60


@pytest.mark.slow
async def test_fully_encrypted_rule_in_the_path_spares_tls_http_ssh_and_catches_shadowsocks(
        lab_network: Network, tmp_path: Path) -> None:
    require_program("ss-server", "shadowsocks-libev")
    require_program("sshd", "openssh-server")
    shell = str(add_host(lab_network, "shell.lab"))
    tunnel_host = str(add_host(lab_network, "tunnel.lab"))
    sshd = _sshd(lab_network, tmp_path, shell)
    try:
        with https_servers(lab_network, "web.lab"), \
                censor(lab_network, tmp_path, POLICY) as log, \
                NamespaceLoop(lab_network.namespace(Side.OUTSIDE), "outside") as outside, \
                NamespaceLoop(lab_network.namespace(Side.INSIDE), "inside") as inside:
            failures = []
            for _ in range(ROUNDS):
                for argv in (["curl", "-sS", "--max-time", "5", "https://web.lab/"],
                             ["curl", "-sS", "--max-time", "5", "http://web.lab/"]):
                    result = run_in(lab_network, *argv)
                    if result.returncode != 0:
                        failures.append((argv[-1], result.stderr))
            for _ in range(ROUNDS // 3):
                login = run_in(lab_network, "ssh", "-i", str(tmp_path / "user_key"),
                               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                               "-o", "ConnectTimeout=5", "-o", "UserKnownHostsFile=/dev/null",
                               f"root@{shell}", "true")
                if login.returncode != 0:
                    failures.append(("ssh", login.stderr))
            echo = EchoServer(Endpoint(tunnel_host, 0))
            await outside.run(echo.__aenter__())
            try:
                ss = Shadowsocks(
                    Endpoint(tunnel_host, 8388), Endpoint("127.0.0.1", 1080), timeout=3,
                    server_prefix=tools.netns_exec_argv(lab_network.namespace(Side.OUTSIDE), []),
                    local_prefix=tools.netns_exec_argv(lab_network.namespace(Side.INSIDE), []))
                async with ss:
                    race = await inside.run(ss.measure(echo.address, SS_CONNECTIONS, 3.0))
            finally:
                await outside.run(echo.__aexit__(None, None, None))
        entries = decisions(log)
    finally:
        sshd.terminate()
        sshd.wait(TIMEOUT)
    assert failures == []
    by_protocol = {entry["protocol"] for entry in entries if entry["effect"] == "allow"}
    assert {"tls", "http", "ssh"} <= by_protocol
    assert not any(entry["fully_encrypted"] for entry in entries
                   if entry["protocol"] in ("tls", "http", "ssh"))
    # Random bytes meet an exemption now and then (about 1 in 60 first packets here).
    assert race.blocked >= SS_CONNECTIONS * 0.9, race
    dropped = [e for e in entries if e["effect"] == "drop"]
    assert len(dropped) == race.blocked
    assert all(e["server"] == f"{tunnel_host}:8388" for e in dropped)
