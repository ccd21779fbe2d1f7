"""A real lab network: namespaces, forwarding through the border, the lab's DNS and CA."""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from noisewall.cli import main
from noisewall.net import (
    Network,
    Side,
    add_host,
    entered,
    issue_server_certificate,
    read_hosts,
    run_argv,
)
from noisewall.net.processes import alive
from noisewall.net.topology import NETNS_ETC
from noisewall.selfsigned import load_cert_chain
from tests.net.cli import noisewall
from tests.netns import require_netns, unique_network_name

TIMEOUT = 30
NOBODY = 65534


def run_in(network: Network, side: Side, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_argv(network, side, argv), capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def web_server(network: Network, address: ipaddress.IPv4Address, port: int,
               context: ssl.SSLContext | None = None) -> Iterator[None]:
    """An HTTP(S) server on ``address:port`` in the outside namespace, answering its peer."""
    with entered(network.namespace(Side.OUTSIDE)):
        server = http.server.ThreadingHTTPServer((str(address), port), _Page)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def test_up_status_run_down_from_the_command_line() -> None:
    require_netns()
    name = unique_network_name()
    started = noisewall("net", "up", "--name", name, "--host", "chat.lab",
                        "--host", "media.lab=203.0.113.17", "--json")
    try:
        assert started.returncode == 0, started.stderr
        report = json.loads(noisewall("net", "status", "--name", name, "--json").stdout)
        (entry,) = report["networks"]
        assert entry["state"] == "up"
        assert entry["hosts"]["chat.lab"] == "203.0.113.10"
        assert entry["hosts"]["media.lab"] == "203.0.113.17"
        assert all(info["exists"] for info in entry["namespaces"].values())
        resolver_pid = entry["resolver"]["pid"]
        assert alive(resolver_pid)
        assert noisewall("net", "run", "--name", name, "--", "true").returncode == 0
        declared = noisewall("net", "host", "--name", name, "late.lab")
        assert declared.stdout == "late.lab 203.0.113.11\n", declared.stderr
        assert noisewall("net", "run", "--name", name, "--", "getent", "hosts",
                         "late.lab").stdout.split() == ["203.0.113.11", "late.lab"]
        again = noisewall("net", "up", "--name", name)
        assert again.returncode == 1
        assert again.stderr.count("\n") == 1 and "already exists" in again.stderr
    finally:
        stopped = noisewall("net", "down", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
    assert f"noisewall-{name}-" not in namespaces
    assert not any((NETNS_ETC / f"noisewall-{name}-{side}").exists() for side in Side)
    assert not Path(f"/run/noisewall/net/{name}").exists()
    assert not alive(resolver_pid)
    assert noisewall("net", "down", "--name", name).returncode == 0  # idempotent


def test_exit_status_and_signals_of_the_program_pass_through(lab_network: Network) -> None:
    name = lab_network.name
    assert noisewall("net", "run", "--name", name, "--", "sh", "-c", "exit 7").returncode == 7
    killed = noisewall("net", "run", "--name", name, "--", "sh", "-c", "kill -TERM $$")
    assert killed.returncode == -15
    missing = noisewall("net", "run", "--name", name, "--", "no-such-program-here")
    assert missing.returncode == 127
    assert missing.stderr == "noisewall: error: no-such-program-here: command not found\n"
    output = noisewall("net", "run", "--name", name, "--side", "outside", "--",
                       "ip", "-brief", "address", "show", lab_network.server.interface)
    assert "203.0.113.10/24" in output.stdout


def test_a_network_that_is_not_up_is_one_clear_line() -> None:
    require_netns()
    result = noisewall("net", "run", "--name", unique_network_name(), "--", "true")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is not up" in result.stderr


def test_without_root_up_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # In process, with the user id seen as nobody's: a real unprivileged child could not
    # even read a checkout in a private folder (CI clones into one), let alone the venv.
    monkeypatch.setattr(os, "geteuid", lambda: NOBODY)
    monkeypatch.setattr(sys, "argv", ["noisewall", "net", "up", "--name", unique_network_name()])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("noisewall: error: noisewall net needs root")
    assert stderr.count("\n") == 1


def test_bad_names_and_hosts_are_refused_before_anything_is_made() -> None:
    assert noisewall("net", "up", "--name", "Bad_Name").returncode == 2
    assert noisewall("net", "up", "--name", "x", "--host", "a.lab=1.2.3").returncode == 2


def test_inside_reaches_outside_through_the_border_with_its_own_address(
        lab_network: Network) -> None:
    address = add_host(lab_network, "chat.lab")
    with web_server(lab_network, address, 8080):
        fetched = run_in(lab_network, Side.INSIDE, "curl", "-sS", "-m", "10",
                         "http://chat.lab:8080/")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == f"hello {lab_network.client_address}\n"  # forwarded, no NAT


def test_the_root_namespace_has_no_link_or_route_into_the_lab(lab_network: Network) -> None:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    assert not [link["ifname"] for link in links if link["ifname"].startswith("nw-")]
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "table", "all"],
                                       capture_output=True, text=True, check=True).stdout)
    lab = (lab_network.inside_subnet, lab_network.outside_subnet)
    for route in routes:
        if route["dst"] not in {"default", "0.0.0.0/0"} and "." in route["dst"]:
            destination = ipaddress.ip_network(route["dst"], strict=False)
            assert not any(destination.overlaps(subnet) for subnet in lab), route


def test_the_resolver_answers_lab_names_and_nothing_else(lab_network: Network) -> None:
    add_host(lab_network, "chat.lab", "203.0.113.15")
    found = run_in(lab_network, Side.INSIDE, "getent", "ahostsv4", "chat.lab")
    assert found.returncode == 0 and found.stdout.split()[0] == "203.0.113.15"
    missing = run_in(lab_network, Side.INSIDE, "getent", "hosts", "example.com")
    assert missing.returncode == 2  # not found: nothing is forwarded to the internet
    late = add_host(lab_network, "late.lab")
    assert run_in(lab_network, Side.INSIDE, "getent", "hosts", "late.lab").stdout.split()[0] \
        == str(late)
    with entered(lab_network.namespace(Side.INSIDE)):
        over_tcp = dns.query.tcp(dns.message.make_query("chat.lab", "A"),
                                 str(lab_network.resolver), timeout=TIMEOUT)
        nxdomain = dns.query.udp(dns.message.make_query("www.google.com", "A"),
                                 str(lab_network.resolver), timeout=TIMEOUT)
    assert over_tcp.answer[0][0].address == "203.0.113.15"
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN


def test_real_tls_clients_inside_trust_the_lab_ca_with_no_options(
        lab_network: Network, tmp_path: Path) -> None:
    address = add_host(lab_network, "chat.lab")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(context, issue_server_certificate(lab_network, ["chat.lab"]))
    with web_server(lab_network, address, 443, context):
        curl = run_in(lab_network, Side.INSIDE, "curl", "-sS", "-m", "10", "https://chat.lab/")
        python = run_in(lab_network, Side.INSIDE, sys.executable, "-c",
                        "import urllib.request; print(urllib.request.urlopen("
                        "'https://chat.lab/', timeout=10).read().decode(), end='')")
        openssl = subprocess.run(
            run_argv(lab_network, Side.INSIDE, ["openssl", "s_client", "-connect", "chat.lab:443",
                                                "-servername", "chat.lab", "-verify_return_error",
                                                "-brief"]),
            input="", capture_output=True, text=True, timeout=TIMEOUT, check=False)
        untrusted = run_in(lab_network, Side.BORDER, "curl", "-sS", "-m", "10",
                           f"https://{address}/")
    assert curl.returncode == 0, curl.stderr
    assert curl.stdout == f"hello {lab_network.client_address}\n"
    assert python.returncode == 0 and python.stdout == curl.stdout, python.stderr
    assert openssl.returncode == 0 and "Verification: OK" in openssl.stderr, openssl.stderr
    assert untrusted.returncode == 60  # the border does not trust the lab CA: the store did it


def test_net_cert_writes_a_certificate_curl_accepts(lab_network: Network,
                                                    tmp_path: Path) -> None:
    issued = noisewall("net", "cert", "--name", lab_network.name, "--out", str(tmp_path),
                       "media.lab", "203.0.113.11")
    assert issued.returncode == 0, issued.stderr
    assert oct((tmp_path / "key.pem").stat().st_mode & 0o777) == "0o600"
    address = add_host(lab_network, "media.lab", "203.0.113.11")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with web_server(lab_network, address, 443, context):
        by_name = run_in(lab_network, Side.INSIDE, "curl", "-sS", "-m", "10",
                         "https://media.lab/")
        by_address = run_in(lab_network, Side.INSIDE, "curl", "-sS", "-m", "10",
                            "https://203.0.113.11/")
    assert by_name.returncode == 0, by_name.stderr
    assert by_address.returncode == 0, by_address.stderr


@pytest.mark.parametrize("side", list(Side))
def test_every_side_resolves_through_the_lab(lab_network: Network, side: Side) -> None:
    config = run_in(lab_network, side, "cat", "/etc/resolv.conf")
    assert config.stdout.split()[:2] == ["nameserver", str(lab_network.resolver)]


def test_in_process_code_enters_the_inside_and_trusts_the_ca_file(lab_network: Network) -> None:
    address = add_host(lab_network, "chat.lab")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_cert_chain(server_context, issue_server_certificate(lab_network, ["chat.lab"]))
    client_context = ssl.create_default_context(cafile=lab_network.ca_file)
    with web_server(lab_network, address, 443, server_context), \
            entered(lab_network.namespace(Side.INSIDE)):
        looked_up = read_hosts(lab_network)["chat.lab"]
        with socket.create_connection((str(looked_up), 443), timeout=TIMEOUT) as raw, \
                client_context.wrap_socket(raw, server_hostname="chat.lab") as tls:
            tls.sendall(b"GET / HTTP/1.0\r\nHost: chat.lab\r\n\r\n")
            reply = b""
            while chunk := tls.recv(4096):
                reply += chunk
    assert reply.endswith(f"hello {lab_network.client_address}\n".encode())


def test_a_second_up_of_a_name_fails_and_leaves_the_first_network_whole() -> None:
    require_netns()
    name = unique_network_name()
    command = [sys.executable, "-m", "noisewall", "net", "up", "--name", name]
    racers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    try:
        results = sorted((racer.wait(TIMEOUT), racer.communicate()[1]) for racer in racers)
        report = json.loads(noisewall("net", "status", "--name", name, "--json").stdout)
    finally:
        noisewall("net", "down", "--name", name)
    assert [status for status, _ in results] == [0, 1]
    assert "already exists" in results[1][1]
    assert report["networks"][0]["state"] == "up"  # the loser removed nothing of the winner's
