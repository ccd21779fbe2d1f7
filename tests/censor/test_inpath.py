"""The censor in the path of a real lab network: unmodified curl, ssh, getent and UDP inside.

Each test makes its own network (unique name) and runs ``noisewall censor
--net`` as a separate process in its border, as a user would; servers listen
in the outside namespace. Nothing in the clients knows about the censor.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from noisewall.censor.nftables import TABLE
from noisewall.net import Network, Side, add_host, entered, issue_server_certificate, run_argv
from noisewall.selfsigned import load_cert_chain
from tests.net.cli import noisewall
from tests.net.test_network import web_server
from tests.netns import require_program

TIMEOUT = 30


def run_in(network: Network, *argv: str,
           timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """An unmodified program run by a user inside."""
    return subprocess.run(run_argv(network, Side.INSIDE, argv), capture_output=True, text=True,
                          timeout=timeout, check=False)


def censor_tables(network: Network) -> str:
    return subprocess.run(["ip", "netns", "exec", network.namespace(Side.BORDER), "nft",
                           "list", "tables"], capture_output=True, text=True, check=True).stdout


@contextmanager
def censor(network: Network, tmp_path: Path, policy: str,
           stop: signal.Signals = signal.SIGTERM) -> Iterator[Path]:
    """``noisewall censor --net`` with ``policy``: its decision log; ``stop`` stops it."""
    (tmp_path / "policy.yaml").write_text(policy)
    log = tmp_path / "decisions.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "noisewall", "censor", "--policy", str(tmp_path / "policy.yaml"),
         "--net", network.name, "--log", str(log)],
        stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("in the path of network"), line + process.stderr.read()
        assert TABLE in censor_tables(network)
        yield log
    finally:
        process.send_signal(stop)
        assert process.wait(TIMEOUT) == 128 + stop
    assert TABLE not in censor_tables(network)  # the rules came off with the censor


def decisions(log: Path, *, settle: float = 0.0) -> list[dict[str, Any]]:
    time.sleep(settle)
    return [json.loads(line) for line in log.read_text().splitlines()]


@contextmanager
def https_servers(network: Network, *names: str) -> Iterator[dict[str, str]]:
    """Per lab name, its own address with an HTTPS (lab-CA certificate) and an HTTP server."""
    addresses = {name: add_host(network, name) for name in names}
    with contextlib.ExitStack() as stack:
        for name, address in addresses.items():
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            load_cert_chain(context, issue_server_certificate(network, [name, str(address)]))
            stack.enter_context(web_server(network, address, 443, context))
            stack.enter_context(web_server(network, address, 80))
        yield {name: str(address) for name, address in addresses.items()}


def test_curl_is_reset_by_sni_while_another_name_passes(lab_network: Network,
                                                        tmp_path: Path) -> None:
    policy = "rules: [{name: no-blocked, match: {sni: blocked.lab}, action: reset}]\n"
    with https_servers(lab_network, "open.lab", "blocked.lab") as addresses, \
            censor(lab_network, tmp_path, policy) as log:
        passed = run_in(lab_network, "curl", "-sS", "https://open.lab/")
        reset = run_in(lab_network, "curl", "-sS", "https://blocked.lab/")
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith("hello ")
    assert reset.returncode != 0
    assert "reset" in reset.stderr.lower(), reset.stderr
    entries = {entry["sni"]: entry for entry in decisions(log)}
    for name, effect in (("open.lab", "allow"), ("blocked.lab", "reset")):
        entry = entries[name]
        assert entry["effect"] == effect and entry["protocol"] == "tls"
        # The real client and server, as the GFW sees them (not the censor's own address).
        assert entry["client"].startswith(f"{lab_network.client_address}:")
        assert entry["server"] == f"{addresses[name]}:443"
        assert entry["ja3"] and entry["ja4"].startswith("t13")


def _sshd(network: Network, folder: Path, address: str) -> subprocess.Popen[str]:
    key = folder / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    user_key = folder / "user_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)],
                   check=True)
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    config = folder / "sshd_config"
    config.write_text(f"ListenAddress {address}:22\nHostKey {key}\nPidFile none\n"
                      f"AuthorizedKeysFile {folder}/authorized_keys\nPermitRootLogin yes\n"
                      "StrictModes no\nPasswordAuthentication no\nUsePAM no\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    return subprocess.Popen(run_argv(network, Side.OUTSIDE, [sshd, "-D", "-e", "-f", str(config)]),
                            stderr=subprocess.PIPE, text=True)


def test_openssh_reaches_a_real_sshd_across_the_censor_classified_ssh(
        lab_network: Network, tmp_path: Path) -> None:
    require_program("sshd", "openssh-server")
    address = str(add_host(lab_network, "shell.lab"))
    sshd = _sshd(lab_network, tmp_path, address)
    policy = "rules: [{name: fet, match: {fully_encrypted: true}, action: reset}]\n"
    try:
        with censor(lab_network, tmp_path, policy) as log:
            login = run_in(lab_network, "ssh", "-i", str(tmp_path / "user_key"),
                           "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", f"root@{address}",
                           "echo reached")
    finally:
        sshd.terminate()
        sshd.wait(TIMEOUT)
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "reached"
    (entry,) = decisions(log)
    assert entry["protocol"] == "ssh" and entry["effect"] == "allow"
    assert entry["client"].startswith(f"{lab_network.client_address}:")
    assert entry["server"] == f"{address}:22"


def test_drop_throttle_and_residual_in_the_path(lab_network: Network, tmp_path: Path) -> None:
    policy = """rules:
  - {name: drop, match: {host: dropped.lab}, action: drop}
  - {name: slow, match: {host: slow.lab}, action: {kind: throttle, rate_kbps: 400}}
  - {name: sni, match: {sni: blocked.lab}, action: reset, residual: 60}
"""
    with https_servers(lab_network, "dropped.lab", "slow.lab", "blocked.lab") as addresses, \
            censor(lab_network, tmp_path, policy) as log:
        blocked = addresses["blocked.lab"]
        before = run_in(lab_network, "curl", "-sSk", f"https://{blocked}/")  # no SNI: passes
        dropped = run_in(lab_network, "curl", "-sS", "--max-time", "2", "http://dropped.lab/")
        started = time.monotonic()
        slow = run_in(lab_network, "curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
                      "-H", "X-Pad: " + "p" * 7000, "http://slow.lab/")
        slow_seconds = time.monotonic() - started
        run_in(lab_network, "curl", "-sS", "https://blocked.lab/")  # reset, residual starts
        after = run_in(lab_network, "curl", "-sSk", f"https://{blocked}/")  # no SNI: residual
    assert before.returncode == 0, before.stderr
    assert dropped.returncode == 28, dropped.stderr  # curl's "operation timed out"
    assert slow.returncode == 0, slow.stderr
    assert slow_seconds >= 0.1  # 7 kB upstream at 50 kB/s beyond a 1.5 kB burst
    assert after.returncode != 0, after.stderr  # torn down as soon as it is accepted
    entries = [entry for entry in decisions(log) if entry["protocol"] != "dns"]
    effects = [(entry["rule"], entry["effect"], entry["residual"]) for entry in entries]
    assert effects == [(None, "allow", False), ("drop", "drop", False),
                       ("slow", "throttle", False), ("sni", "reset", False),
                       ("sni", "reset", True)]
    assert entries[-1]["server"] == f"{blocked}:443"


UDP_CLIENT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1.5)
sock.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
try:
    print(sock.recv(100).decode())
except TimeoutError:
    print("no answer")
"""


@contextmanager
def udp_echo(network: Network, address: str, ports: tuple[int, ...]) -> Iterator[None]:
    sockets = []
    with entered(network.namespace(Side.OUTSIDE)):
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, port))
            sock.settimeout(0.2)
            sockets.append(sock)
    stop = threading.Event()

    def echo(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(100)
            except TimeoutError:
                continue
            sock.sendto(b"pong " + data, peer)

    threads = [threading.Thread(target=echo, args=(sock,), daemon=True) for sock in sockets]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in sockets:
            sock.close()


def test_a_udp_drop_rule_blocks_the_exchange_and_is_logged(lab_network: Network,
                                                          tmp_path: Path) -> None:
    address = str(add_host(lab_network, "quic.lab"))
    policy = (f"rules: [{{name: no-quic, match: {{transport: udp, server: {address}, "
              "port: 443}, action: drop}]\n")
    with udp_echo(lab_network, address, (443, 4433)), \
            censor(lab_network, tmp_path, policy) as log:
        blocked = run_in(lab_network, sys.executable, "-c", UDP_CLIENT, address, "443")
        passed = run_in(lab_network, sys.executable, "-c", UDP_CLIENT, address, "4433")
        entries = decisions(log, settle=1.5)  # the censor reads the kernel's sets twice a second
    assert blocked.stdout.strip() == "no answer"
    assert passed.stdout.strip() == "pong ping"
    seen = {(e["server"], e["rule"], e["effect"], e["transport"]) for e in entries}
    assert seen == {(f"{address}:443", "no-quic", "drop", "udp"),
                    (f"{address}:4433", None, "allow", "udp")}
    assert all(entry["client"].startswith(f"{lab_network.client_address}:") for entry in entries)


def test_the_dns_action_forges_the_answer_a_real_client_sees(lab_network: Network,
                                                            tmp_path: Path) -> None:
    real = str(add_host(lab_network, "real.lab"))
    add_host(lab_network, "forged.lab")
    policy = ("rules: [{name: inject, match: {query: forged.lab}, "
              "action: {kind: dns, answer: 203.0.113.99}}]\n")
    with censor(lab_network, tmp_path, policy, stop=signal.SIGINT) as log:  # Ctrl-C
        forged = run_in(lab_network, "getent", "ahostsv4", "forged.lab")
        honest = run_in(lab_network, "getent", "ahostsv4", "real.lab")
    assert forged.stdout.split()[:1] == ["203.0.113.99"], forged
    assert honest.stdout.split()[:1] == [real], honest
    entries = decisions(log)
    forged_entries = [e for e in entries if e["query"] == "forged.lab"]
    assert forged_entries and all(e["effect"] == "dns" and e["rule"] == "inject"
                                  for e in forged_entries)
    assert all(e["protocol"] == "dns" and e["server"] == f"{lab_network.resolver}:53"
               and e["client"].startswith(f"{lab_network.client_address}:") for e in entries)
    assert {e["effect"] for e in entries if e["query"] == "real.lab"} == {"allow"}


def test_a_censor_pointed_at_a_network_that_is_not_up_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("rules: []\n")
    result = noisewall("censor", "--policy", str(tmp_path / "policy.yaml"), "--net", "absent9",
                       "--log", str(tmp_path / "log.jsonl"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "not up" in result.stderr, result.stderr
    assert not (tmp_path / "log.jsonl").exists()
