"""The HTTP and SSH classifiers on what real clients send, and on what they must refuse.

Real clients (``curl``, Python ``http.client``, OpenSSH ``ssh``) connect to a
loopback server that records their first bytes and hangs up.
"""

from __future__ import annotations

import asyncio
import http.client
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisewall.censor.classify import http as http_classifier
from noisewall.censor.classify import ssh, tls
from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult
from tests.censor.test_classify_tls import (
    CYBERCHEF_JA4_TLS13,
    NOT_TLS,
    TOOL_TIMEOUT,
    Recorder,
    feed_in_pieces,
    require_tool,
    run_tool,
)


class Capture:
    """One client's first bytes (as read) and its own output."""

    def __init__(self, chunks: list[bytes], output: str) -> None:
        self.chunks = chunks
        self.output = output
        self.data = b"".join(chunks)


async def _capture_tool(inspect: Callable[[bytes], InspectResult], argv: list[str]) -> Capture:
    async with Recorder(inspect) as recorder:
        task = asyncio.ensure_future(
            run_tool(*[arg.replace("PORT", str(recorder.port)) for arg in argv])
        )
        chunks = await recorder.capture(task)
        _, out, err = task.result()
        return Capture(chunks, (out + err).decode("utf-8", "replace"))


def _http_client_request(port: int, method: str, path: str, headers: dict[str, str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TOOL_TIMEOUT)
    try:
        connection.request(method, path, body=b"x" * 100 if method == "POST" else None,
                           headers=headers)
        connection.getresponse()
    except (OSError, http.client.HTTPException):
        pass  # the recorder hangs up without answering, by design
    finally:
        connection.close()


async def _capture_http_client(method: str, path: str, headers: dict[str, str]) -> Capture:
    async with Recorder(http_classifier.inspect) as recorder:
        chunks = await recorder.capture(
            asyncio.to_thread(_http_client_request, recorder.port, method, path, headers)
        )
        return Capture(chunks, "")


def http_detection(data: bytes) -> Detection:
    result = http_classifier.inspect(data)
    assert isinstance(result, Detection), f"not recognised as HTTP: {result!r}"
    return result


# --------------------------------------------------------------------------- HTTP, real clients


def curl_http(*extra: str) -> Capture:
    curl = require_tool("curl")
    argv = [curl, "-sS", "--max-time", str(int(TOOL_TIMEOUT)),
            "--resolve", "example.org:PORT:127.0.0.1", *extra]
    return asyncio.run(_capture_tool(http_classifier.inspect, argv))


def test_curl_get() -> None:
    capture = curl_http("http://example.org:PORT/some/path?q=1")
    detection = http_detection(capture.data)
    features = detection.features
    assert detection.protocol == "http"
    assert detection.confidence >= 0.99
    assert features["method"] == "GET"
    assert features["target"] == "/some/path?q=1"
    assert features["version"] == "HTTP/1.1"
    assert features["host"] == "example.org"  # the port is stripped
    assert features["user_agent"].startswith("curl/")
    assert features["truncated"] is False and features["malformed"] is False
    assert "host" in features["header_names"]
    # Byte by byte, as it really arrived, and the whole request: one verdict.
    every_byte = list(range(len(capture.data)))
    assert feed_in_pieces(http_classifier.inspect, capture.data, every_byte) == detection


def test_curl_post_with_mixed_case_host_header() -> None:
    capture = curl_http("-X", "POST", "-d", "a=1", "-H", "hOsT: Media.Example.ORG:8443",
                        "http://example.org:PORT/upload")
    features = http_detection(capture.data).features
    assert features["method"] == "POST"
    assert features["target"] == "/upload"
    assert features["host"] == "media.example.org"


def test_curl_header_block_over_the_cap_is_decided_on_what_is_there() -> None:
    big = "a" * (http_classifier.MAX_HEADER_BLOCK + 4000)
    capture = curl_http("-H", f"X-Big: {big}", "http://example.org:PORT/big")
    assert len(capture.data) >= http_classifier.MAX_HEADER_BLOCK
    # Before the cap: still waiting for the end of the header block.
    cap = http_classifier.MAX_HEADER_BLOCK
    assert http_classifier.inspect(capture.data[: cap - 1]) is NEED_MORE
    detection = http_detection(capture.data)
    assert detection.features["truncated"] is True
    assert detection.features["host"] == "example.org"  # curl sends Host first
    assert detection.confidence < 0.99
    # Bytes past the cap change nothing.
    assert http_classifier.inspect(capture.data[:cap]) == detection


@pytest.mark.parametrize(
    ("method", "path", "headers", "host"),
    [
        ("GET", "/index.html", {}, "127.0.0.1"),
        ("POST", "/media/upload", {"X-Client": "noisewall"}, "127.0.0.1"),
        ("PUT", "/v1/item", {"Host": "Chat.Example.ORG:5222"}, "chat.example.org"),
        ("DELETE", "/v1/item", {"HOST": "[2001:db8::1]:8080"}, "2001:db8::1"),
        ("OPTIONS", "*", {}, "127.0.0.1"),
    ],
)
def test_python_http_client(method: str, path: str, headers: dict[str, str], host: str) -> None:
    capture = asyncio.run(_capture_http_client(method, path, headers))
    detection = http_detection(capture.data)
    assert detection.features["method"] == method
    assert detection.features["target"] == path
    assert detection.features["host"] == host
    assert detection.confidence >= 0.99


@settings(max_examples=200, deadline=None)
@given(
    request=st.sampled_from([
        b"GET /a HTTP/1.1\r\nHost: example.org\r\nUser-Agent: x\r\n\r\n",
        b"POST /upload HTTP/1.1\r\nHost: media.example.org:8443\r\nContent-Length: 3\r\n\r\nabc",
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n",
        b"HEAD / HTTP/1.0\n\n",
    ]),
    cuts=st.lists(st.integers(1, 100), max_size=12),
)
def test_http_random_splits(request: bytes, cuts: list[int]) -> None:
    # Pieces of a request end at its header block; a body may follow and change nothing.
    header_end = re.search(rb"\r?\n\r?\n", request)
    assert header_end is not None
    end = header_end.end()
    whole = http_detection(request)
    assert http_detection(request[:end]) == whole
    assert feed_in_pieces(http_classifier.inspect, request[:end], cuts) == whole


@pytest.mark.parametrize(
    ("data", "expected_host"),
    [
        (b"GET http://Proxy.Example:81/x HTTP/1.1\r\n\r\n", "proxy.example"),
        (b"CONNECT chat.example.org:5222 HTTP/1.1\r\n\r\n", "chat.example.org"),
        (b"GET / HTTP/1.1\r\nhost: a.b\r\nUser-Agent: z\r\n\r\n", "a.b"),
        (b"GET / HTTP/1.1\r\nHost: a.b:\r\n\r\n", "a.b"),
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", None),
    ],
)
def test_http_host_sources(data: bytes, expected_host: str | None) -> None:
    assert http_detection(data).features["host"] == expected_host


def test_http_malformed_header_is_weak_evidence() -> None:
    detection = http_detection(b"GET / HTTP/1.1\r\nHost: a.b\r\nno colon here\r\n")
    assert detection.features["malformed"] is True
    assert detection.features["host"] == "a.b"
    assert detection.confidence < 0.9
    two_hosts = http_detection(b"GET / HTTP/1.1\r\nHost: a.b\r\nHost: c.d\r\n\r\n")
    assert two_hosts.features["malformed"] is True


@pytest.mark.parametrize("blank", [b"\r\n", b"\n", b"\r\n\r\n\n"])
def test_empty_lines_before_the_request_line_do_not_hide_the_host(blank: bytes) -> None:
    # Issue 19: servers skip them (RFC 9112 section 2.2), so the censor must too.
    detection = http_detection(blank + b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n")
    assert detection.features["host"] == "blocked.example"
    assert detection.confidence >= 0.9
    assert http_classifier.inspect(blank) is NEED_MORE
    assert http_classifier.inspect(blank + b"\r") is NEED_MORE
    assert http_classifier.inspect(blank + b"GE") is NEED_MORE


@pytest.mark.parametrize(
    "prefix",
    [b"G", b"GE", b"GET", b"GET ", b"GET /", b"GET / ", b"GET / HTTP/1", b"GET / HTTP/1.1\r",
     b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: a", b"OPTIONS * HTTP/1.1\r\n\r"],
)
def test_http_prefixes_need_more(prefix: bytes) -> None:
    assert http_classifier.inspect(prefix) is NEED_MORE


@pytest.mark.parametrize(
    "data",
    [
        b"get / HTTP/1.1\r\n\r\n",  # methods are case-sensitive
        b"FETCH / HTTP/1.1\r\n\r\n",
        b"GETS",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # the HTTP/2 connection preface
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET /\r\n",  # HTTP/0.9
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"GET / HTTX",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        CYBERCHEF_JA4_TLS13,
        *[value for name, value in NOT_TLS.items() if name != "http request"],
    ],
)
def test_not_http(data: bytes) -> None:
    assert http_classifier.inspect(data) is None


# --------------------------------------------------------------------------- SSH


def test_openssh_client_banner() -> None:
    ssh_path = require_tool("ssh")
    argv = [ssh_path, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={int(TOOL_TIMEOUT)}",
            "-F", "/dev/null", "-p", "PORT", "127.0.0.1", "true"]
    capture = asyncio.run(_capture_tool(ssh.inspect, argv))
    detection = ssh.inspect(capture.data)
    assert isinstance(detection, Detection), (capture.data, capture.output)
    assert detection.protocol == "ssh"
    assert detection.confidence >= 0.99
    assert detection.features["proto_version"] == "2.0"
    # `ssh -V` names the same software and comment: "OpenSSH_9.2p1 Debian-2+deb12u6, OpenSSL ..."
    version = asyncio.run(run_tool(ssh_path, "-V"))
    stated = (version[1] + version[2]).decode().split(",")[0].split(" ", 1)
    assert detection.features["software"] == stated[0]
    assert detection.features["software"].startswith("OpenSSH_")
    if len(stated) > 1:
        assert detection.features["comments"] == stated[1]
    assert feed_in_pieces(ssh.inspect, capture.data, list(range(len(capture.data)))) == detection


@pytest.mark.parametrize(
    ("banner", "proto", "software", "comments"),
    [
        (b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n", "2.0", "OpenSSH_9.6p1",
         "Ubuntu-3ubuntu13.5"),
        (b"SSH-1.99-Cisco-1.25\r\n", "1.99", "Cisco-1.25", None),
        (b"SSH-2.0-libssh-0.9.6\r\n", "2.0", "libssh-0.9.6", None),
        (b"SSH-2.0-Go\r\n\x00\x00\x05\xdc\x0a\x14", "2.0", "Go", None),  # KEXINIT may follow
        (b"SSH-2.0-dropbear_2022.83\n", "2.0", "dropbear_2022.83", None),  # bare LF, tolerated
    ],
)
def test_ssh_banners(banner: bytes, proto: str, software: str, comments: str | None) -> None:
    detection = ssh.inspect(banner)
    assert isinstance(detection, Detection)
    assert detection.features["proto_version"] == proto
    assert detection.features["software"] == software
    assert detection.features["comments"] == comments
    line_end = banner.index(b"\n") + 1
    assert feed_in_pieces(ssh.inspect, banner[:line_end], list(range(line_end))) == detection


def test_ssh_1_5_is_weak_evidence() -> None:
    detection = ssh.inspect(b"SSH-1.5-OpenSSH_2.1\r\n")
    assert isinstance(detection, Detection)
    assert detection.confidence < 0.9


@settings(max_examples=200, deadline=None)
@given(
    software=st.from_regex(re.compile(rb"[!-~]{1,40}"), fullmatch=True),
    comments=st.one_of(st.none(), st.from_regex(re.compile(rb"[ -~]{0,60}"), fullmatch=True)),
    proto=st.sampled_from([b"2.0", b"1.99"]),
    cuts=st.lists(st.integers(1, 120), max_size=10),
)
def test_ssh_generated_banners_in_random_splits(
    software: bytes, comments: bytes | None, proto: bytes, cuts: list[int]
) -> None:
    banner = b"SSH-" + proto + b"-" + software + (b" " + comments if comments is not None else b"")
    line = banner + b"\r\n"
    whole = ssh.inspect(line)
    assert isinstance(whole, Detection)
    assert whole.features["banner"] == banner.decode()
    assert feed_in_pieces(ssh.inspect, line, cuts) == whole


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-\r\n",  # no software version
        b"SSH-2.0- comment\r\n",
        b"SSH-2.-x\r\n",
        b"SSH-x.0-y\r\n",
        b"SSH-2.0-a\rb\r\n",
        b"SSH-2.0-caf\xc3\xa9\r\n",  # not US-ASCII
        b"SSH-2.0-" + b"a" * 250 + b"\r\n",  # longer than 255 bytes
        b"SSH-2.0-" + b"a" * 300,  # no line end within 255 bytes
        b"ssh-2.0-OpenSSH\r\n",
        b"Welcome to the server\r\nSSH-2.0-x\r\n",  # pre-banner lines: servers only
        b"GET / HTTP/1.1\r\n\r\n",
        CYBERCHEF_JA4_TLS13,
        *[value for name, value in NOT_TLS.items() if name != "ssh banner"],
    ],
)
def test_not_ssh(data: bytes) -> None:
    assert ssh.inspect(data) is None


@pytest.mark.parametrize("prefix", [b"S", b"SSH", b"SSH-", b"SSH-2", b"SSH-2.0", b"SSH-2.0-Open",
                                    b"SSH-2.0-OpenSSH_9.6 Ubuntu", b"SSH-2.0-x\r"])
def test_ssh_prefixes_need_more(prefix: bytes) -> None:
    assert ssh.inspect(prefix) is NEED_MORE


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for inspect in (http_classifier.inspect, ssh.inspect, tls.inspect):
        result = inspect(data)
        assert result is None or result is NEED_MORE or isinstance(result, Detection)


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from([
        b"GET /a HTTP/1.1\r\nHost: example.org\r\nUser-Agent: x\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u6\r\n",
    ]),
    edits=st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 80),
)
def test_damaged_requests_and_banners_never_raise(
    base: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        for inspect in (http_classifier.inspect, ssh.inspect):
            result = inspect(candidate)
            assert result is None or result is NEED_MORE or isinstance(result, Detection)


METHOD_INITIALS = {method[0] for method in http_classifier.METHODS}


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64).filter(
    lambda b: b.lstrip(b"\r\n")[:1] not in (b"", *(bytes([i]) for i in METHOD_INITIALS))))
def test_random_bytes_not_starting_like_a_method_are_not_http(data: bytes) -> None:
    assert http_classifier.inspect(data) is None
    if not data.startswith(b"S"):
        assert ssh.inspect(data) is None
