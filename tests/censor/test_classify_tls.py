"""The TLS ClientHello classifier against published fingerprints and real clients.

Third-party truth used here:

* Published ClientHellos with known fingerprints: CyberChef's JA3/JA4 operation
  tests (gchq/CyberChef ``tests/operations/tests/JA3Fingerprint.mjs`` and
  ``JA4Fingerprint.mjs``) and s2n-tls's JA3 known-value tests
  (aws/s2n-tls ``tests/unit/s2n_fingerprint_ja3_test.c``, which took them from
  ja3-rs and ja3_4java captures). The JA4 definition's own worked example
  (FoxIO-LLC/ja4 ``technical_details/JA4.md``, also asserted in the reference
  ``rust/ja4/src/tls.rs`` tests) is the Chrome hello CyberChef uses.
* FoxIO's reference output for ``pcap/badcurveball.pcap``
  (``rust/ja4/src/snapshots/ja4__insta@badcurveball.pcap.snap``): a Chrome 72
  hello with the same ciphers, extensions and signature algorithms as the
  ja3-rs Chrome capture below.
* OpenSSL's own decoding (``openssl s_client -trace``) of the very hello it sent
  to our recorder, from which the test computes JA3 and JA4 by hand.
* The cipher list Python's ``ssl`` module says it offers.

Real clients (Python ``ssl``, ``openssl s_client``, ``curl``) connect to a
loopback server that records what they send and hangs up, so their handshakes
fail by design.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import shutil
import ssl
import struct
from collections.abc import Awaitable, Callable
from types import TracebackType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noisewall.censor.classify import http, noisesocket, ssh, tls, wa
from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult
from noisewall.noise.dh import DH_FUNCTIONS
from noisewall.noise.noisesocket import NoiseSocketConnection
from noisewall.noise.settings import NoiseSettings

# --------------------------------------------------------------------------- helpers
# (also used by test_classify_http_ssh.py)

#: Seconds a recorder waits for more bytes before it takes what it has.
IDLE = 1.0
#: Seconds any real client may run.
TOOL_TIMEOUT = 10.0
JA3_HASH = re.compile(r"[0-9a-f]{32}")
JA3_STRING = re.compile(r"\d+,[\d-]*,[\d-]*,[\d-]*,[\d-]*")
JA4 = re.compile(r"t(?:1[0-3]|s[1-3]|00)[di]\d{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")


def require_tool(name: str) -> str:
    """The path of a real client, or a test failure naming what is missing (never a skip)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"'{name}' is not installed: this test needs the real {name} client (CI installs it)",
            pytrace=False,
        )
    return path


async def run_tool(*argv: str, timeout: float = TOOL_TIMEOUT) -> tuple[int | None, bytes, bytes]:
    """Run a client to completion; it is killed if it outlives ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out, err


class Recorder:
    """A loopback TCP server that keeps the first bytes each client sends, then hangs up.

    It stops reading when ``inspect`` decides (anything but NEED_MORE), when
    the client goes quiet for :data:`IDLE` seconds, or at 64 KiB. Each
    capture is the list of reads as they arrived (TCP segments, roughly).
    """

    def __init__(self, inspect: Callable[[bytes], InspectResult]) -> None:
        self._inspect = inspect
        self._captures: asyncio.Queue[list[bytes]] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Recorder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: list[bytes] = []
        try:
            while sum(map(len, chunks)) < 65536:
                chunk = await asyncio.wait_for(reader.read(65536), IDLE)
                if not chunk:
                    break
                chunks.append(chunk)
                if self._inspect(b"".join(chunks)) is not NEED_MORE:
                    break
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            self._captures.put_nowait(chunks)

    async def capture(self, client: Awaitable[object]) -> list[bytes]:
        """Run one client to completion and return what it sent first."""
        await client
        return await asyncio.wait_for(self._captures.get(), TOOL_TIMEOUT)


def feed_in_pieces(
    inspect: Callable[[bytes], InspectResult], data: bytes, cuts: list[int]
) -> InspectResult:
    """Feed ``data`` cut at ``cuts`` as a stream would arrive: NEED_MORE until the end."""
    bounds = [*sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    for bound in bounds[:-1]:
        assert inspect(data[:bound]) is NEED_MORE, f"decided early at byte {bound}"
    return inspect(data)


# --------------------------------------------------------------------------- vectors


def _unhex(*parts: str, zero_padding: int = 0) -> bytes:
    """Hex text plus trailing zero bytes (the zero-filled padding extension)."""
    return bytes.fromhex("".join(parts)) + bytes(zero_padding)


def in_record(body: bytes, record_version: int = 0x0301) -> bytes:
    """A ClientHello body wrapped in its handshake header and one handshake record."""
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    header = b"\x16" + record_version.to_bytes(2, "big") + len(handshake).to_bytes(2, "big")
    return header + handshake


def refragment(record: bytes, sizes: list[int]) -> bytes:
    """The same handshake bytes re-cut into several records of the given sizes."""
    handshake = record[5 : 5 + int.from_bytes(record[3:5], "big")]
    out = bytearray()
    pos = 0
    for size in [*sizes, len(handshake)]:
        piece = handshake[pos : pos + max(size, 1)]
        if not piece:
            break
        out += record[:3] + len(piece).to_bytes(2, "big") + piece
        pos += len(piece)
    return bytes(out)


def count_records(data: bytes) -> int:
    """How many whole TLS records ``data`` holds."""
    count = pos = 0
    while pos + 5 <= len(data):
        pos += 5 + int.from_bytes(data[pos + 3 : pos + 5], "big")
        if pos > len(data):
            break
        count += 1
    return count


# Each vector: hex as published, the zero bytes of its padding extension counted.

# CyberChef JA4 test 'TLS 1.3' (a Chrome record)
CYBERCHEF_JA4_TLS13 = _unhex(
    "1603010200010001fc0303b2c03e7ba990ef540c316a665d4d925f8e9079ac4b15687e587dc99016e75a6c20"
    "d0b0099243c9296a0c84153ea4ada7d87ad017f4211c2ea1350b0b3cc5514d5f00205a5a130113021303c02b"
    "c02fc02cc030cca9cca8c013c014009c009d002f003501000193fafa000000000024002200001f636f6e7465"
    "6e742d6175746f66696c6c2e676f6f676c65617069732e636f6d0033002b00293a3a000100001d0020fb2cd8"
    "ef3d605b96ab03119ec4f30a6e2088cb1af86c41a81feace8706068c50000d00120010040308040401050308"
    "0505010806060100230000000b00020100ff01000100000a000a00083a3a001d00170018001b000302000244"
    "690005000302683200120000002d000201010010000e000c02683208687474702f312e310005000501000000"
    "00002b0007060a0a03040303001700001a1a000100001500b8",
    zero_padding=184,
)

# CyberChef JA4 test 'TLS 1.2' (a Firefox record)
CYBERCHEF_JA4_TLS12 = _unhex(
    "1603010200010001fc0303ecb2691addb2bf6c599c7aaae23de5f42561cc04eb41029acc6fc050a16ac1d220"
    "46f8617b580ac9358e2aa44e306d52466bcc989c87c8ca64309f5faf50ba7b4d0022130113031302c02bc02f"
    "cca9cca8c02cc030c00ac009c013c014009c009d002f00350100019100000021001f00001c636f6e74696c65"
    "2e73657276696365732e6d6f7a696c6c612e636f6d00170000ff01000100000a000e000c001d001700180019"
    "01000101000b00020100002300000010000e000c02683208687474702f312e31000500050100000000002200"
    "0a000804030503060302030033006b0069001d00208909858fbeb6ed2f1248ba5b9e2978bead0e840110192c"
    "61daed0096798b184400170041044d183d91f5eed35791fa982464e3b0214aaa5f5d1b78616d9b9fbebc22d1"
    "1f535b2f94c686143136aa795e6e5a875d6c08064ad5b76d44caad766e2483012748002b0005040304030300"
    "0d0018001604030503060308040805080604010501060102030201002d00020101001c000240010015007a",
    zero_padding=122,
)

# CyberChef JA3 test 'TLS 1.0'
CYBERCHEF_JA3_TLS10 = _unhex(
    "16030100a4010000a00301543dd2dd48f517ca9a93b1e599f019fdece704a23e86c1dcac588427abbaddf200"
    "005cc014c00a0039003800880087c00fc00500350084c012c00800160013c00dc003000ac013c00900330032"
    "009a009900450044c00ec004002f009600410007c011c007c00cc00200050004001500120009001400110008"
    "0006000300ff0100001b000b000403000102000a000600040018001700230000000f000101",
)

# CyberChef JA3 test 'TLS 1.3'
CYBERCHEF_JA3_TLS13 = _unhex(
    "1603010200010001fc03034355d402c132771a9386b6e9994ae37069e0621af504c26673b1343843c21d8d00"
    "00264a4a130113021303c02bc02fc02cc030cca9cca8cc14cc13c013c014009c009d002f0035000a010001ad"
    "dada0000ff01000100000000180016000013626c6f672e636c6f7564666c6172652e636f6d00170000002300"
    "00000d00140012040308040401050308050501080606010201000500050100000000001200000010000e000c"
    "02683208687474702f312e3175500000000b000201000028002b00295a5a000100001d0020cf78b9167af054"
    "b922a96752b43973107b2a57766357dd288b2b42ab5df30e08002d00020101002b000b0acaca7f1203030302"
    "0301000a000a00085a5a001d001700180a0a000100001500e4",
    zero_padding=228,
)

# s2n-tls: ja3-rs chrome-grease-single.pcap (ClientHello body)
S2N_CHROME_GREASE = _unhex(
    "030386ada4cc19e7145454fde73733df66cbf6ef3ec0a154c6dd145ec083acb9b4e7201c64aea7a2c3e18cd1"
    "25024df7864ac719d0c4bdfb40c2ef7f6dd39aa753dfdd00221a1a130113021303c02bc02fc02cc030cca9cc"
    "a8c013c014009c009d002f0035000a010001910a0a000000000020001e00001b676f6f676c656164732e672e"
    "646f75626c65636c69636b2e6e657400170000ff01000100000a000a00089a9a001d00170018000b00020100"
    "002300000010000e000c02683208687474702f312e31000500050100000000000d0014001204030804040105"
    "0308050501080606010201001200000033002b00299a9a000100001d002059086f419aa5aa1d81e347f0255f"
    "9207fc4b137451469808743bde5786e82c74002d00020101002b000b0afafa0304030303020301001b000302"
    "0002baba000100001500bd",
    zero_padding=189,
)

# s2n-tls: ja3-rs curl-ipv6.pcap (ClientHello body)
S2N_CURL_IPV6 = _unhex(
    "030340c78aef5c7fed984a198a030bc02dc0d68f0b147d233d90b42b4b282c440c4d20f47304ed1742d6b508"
    "2e73787125525ceae7d7e57cfa27fea352637a27c35d58003e130213031301c02cc030009fcca9cca8ccaac0"
    "2bc02f009ec024c028006bc023c0270067c00ac0140039c009c0130033009d009c003d003c0035002f00ff01"
    "00017500000010000e00000b6578616d706c652e636f6d000b000403000102000a000c000a001d0017001e00"
    "190018337400000010000e000c02683208687474702f312e310016000000170000000d0030002e0403050306"
    "03080708080809080a080b080408050806040105010601030302030301020103020202040205020602002b00"
    "09080304030303020301002d00020101003300260024001d00202990c2ec21682c5a7a5a4649594254660292"
    "0c081659f6cc75b8165320467923001500b6",
    zero_padding=182,
)

# s2n-tls: ja3_4java openssl-ssl3.bin (ClientHello body)
S2N_OPENSSL_SSL3 = _unhex(
    "0300543dd2a9b2d759f7c4cf6430ebccf736589b78b89db50d59af82a6c0acfba0b100005cc014c00a003900"
    "3800880087c00fc00500350084c012c00800160013c00dc003000ac013c00900330032009a009900450044c0"
    "0ec004002f009600410007c011c007c00cc002000500040015001200090014001100080006000300ff0100",
)


# --------------------------------------------------------------------------- real clients

CLIENT_ALPN = ["h2", "http/1.1"]


class Capture:
    """What one real client sent first (as read, segment by segment) and what it printed."""

    def __init__(self, chunks: list[bytes], output: str) -> None:
        self.chunks = chunks
        self.output = output
        self.data = b"".join(chunks)

    def detection(self) -> Detection:
        result = tls.inspect(self.data)
        assert isinstance(result, Detection), f"not recognised as TLS: {result!r}"
        return result


def python_ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(CLIENT_ALPN)
    return context


async def _python_ssl_client(port: int) -> str:
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", port, ssl=python_ssl_context(), server_hostname="example.org"
            ),
            TOOL_TIMEOUT,
        )
    except (OSError, asyncio.IncompleteReadError):
        return ""  # the recorder hangs up mid-handshake, by design
    writer.close()
    return ""


async def _tool_client(argv: list[str]) -> str:
    _, out, err = await run_tool(*argv)
    return (out + err).decode("utf-8", "replace")


def _client_argv(client: str, port: int) -> list[str]:
    if client.startswith("openssl"):
        argv = [
            require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
            "-servername", "example.org", "-alpn", ",".join(CLIENT_ALPN),
        ]
        return [*argv, "-trace"] if client == "openssl-trace" else argv
    assert client == "curl"
    return [
        require_tool("curl"), f"https://example.org:{port}/", "--resolve",
        f"example.org:{port}:127.0.0.1", "-k", "-sS", "--max-time", str(int(TOOL_TIMEOUT)),
    ]


async def _capture(client: str) -> Capture:
    async with Recorder(tls.inspect) as recorder:
        if client == "python":
            run: Awaitable[str] = _python_ssl_client(recorder.port)
        else:
            run = _tool_client(_client_argv(client, recorder.port))
        task = asyncio.ensure_future(run)
        chunks = await recorder.capture(task)
        return Capture(chunks, task.result())


class RealClients:
    """Each real client's first bytes, captured once per (client, run) for the module."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], Capture] = {}

    def hello(self, client: str, run: int = 0) -> Capture:
        if client != "python":
            require_tool(client.split("-", maxsplit=1)[0])  # fails the test that needs it
        if (client, run) not in self._cache:
            self._cache[client, run] = asyncio.run(_capture(client))
        return self._cache[client, run]


@pytest.fixture(scope="module")
def clients() -> RealClients:
    return RealClients()


def _check_common(detection: Detection) -> None:
    features = detection.features
    assert detection.protocol == "tls"
    assert detection.confidence >= 0.99
    assert features["sni"] == "example.org"
    assert features["alpn"] == CLIENT_ALPN or features["alpn"] == ["http/1.1"]
    assert features["version"] == "TLS 1.3"
    assert features["versions"][:2] == ["TLS 1.3", "TLS 1.2"]
    assert JA3_STRING.fullmatch(features["ja3"]), features["ja3"]
    assert features["ja3_hash"] == hashlib.md5(features["ja3"].encode()).hexdigest()
    assert JA4.fullmatch(features["ja4"]), features["ja4"]
    assert features["ja4"].startswith("t13d")
    assert features["cipher_count"] == len(features["cipher_suites"])
    assert features["extension_count"] == len(features["extensions"])
    assert features["malformed_extensions"] == []


def test_python_ssl_client(clients: RealClients) -> None:
    first, second = clients.hello("python", 0).detection(), clients.hello("python", 1).detection()
    _check_common(first)
    assert first.features["alpn"] == CLIENT_ALPN
    assert first.features["ja4"][8:10] == "h2"
    # The same client configuration gives the same fingerprints on every connection.
    for key in ("ja3", "ja3_hash", "ja4", "ja4_r"):
        assert first.features[key] == second.features[key]
    # The ciphers are exactly those the ssl module says it offers (plus the
    # renegotiation SCSV, RFC 5746), in the same order.
    offered = [cipher["id"] & 0xFFFF for cipher in python_ssl_context().get_ciphers()]
    assert first.features["cipher_suites"] == [*offered, 0x00FF]


def test_curl(clients: RealClients) -> None:
    first, second = clients.hello("curl", 0).detection(), clients.hello("curl", 1).detection()
    _check_common(first)
    for key in ("ja3", "ja3_hash", "ja4", "ja4_r"):
        assert first.features[key] == second.features[key]
    version = asyncio.run(run_tool(require_tool("curl"), "-V"))[1].decode()
    expected_alpn = CLIENT_ALPN if "HTTP2" in version else ["http/1.1"]
    assert first.features["alpn"] == expected_alpn


def _trace_section(trace: str) -> str:
    start = trace.find("ClientHello")
    assert start >= 0, f"openssl -trace printed no ClientHello (built without ssl-trace?):\n{trace}"
    end = trace.find("\n---", start)
    return trace[start : end if end > 0 else len(trace)]


def _trace_extensions(section: str) -> list[tuple[int, str, list[str]]]:
    """[(type, name, content lines)] from OpenSSL's -trace rendering of a ClientHello."""
    found = []
    for chunk in section.split("extension_type=")[1:]:
        head, *lines = chunk.splitlines()
        name_number = re.match(r"(\w+)\((\d+)\)", head)
        assert name_number, head
        found.append((int(name_number.group(2)), name_number.group(1), [x.strip() for x in lines]))
    return found


def _hand_ja3(version: int, ciphers: list[int], extensions: list[int], groups: list[int],
              formats: list[int]) -> str:
    """JA3 straight from the Salesforce README: decimal values, '-' within, ',' between."""
    def fields(values: list[int]) -> str:
        return "-".join(str(v) for v in values if v not in tls.GREASE)

    return f"{version},{fields(ciphers)},{fields(extensions)},{fields(groups)},{fields(formats)}"


def _hand_ja4(versions: list[int], sni: bool, ciphers: list[int], extensions: list[int],
              alpn: str, sigalgs: list[int]) -> str:
    """JA4 straight from FoxIO's JA4.md, for a TCP hello whose first ALPN value is alphanumeric."""
    def sha12(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()[:12] if text else "0" * 12

    codes = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10"}
    version = codes[max(v for v in versions if v not in tls.GREASE)]
    ciphers = [c for c in ciphers if c not in tls.GREASE]
    extensions = [e for e in extensions if e not in tls.GREASE]
    a = f"t{version}{'d' if sni else 'i'}{len(ciphers):02d}{len(extensions):02d}{alpn[0]}{alpn[-1]}"
    b = ",".join(sorted(f"{c:04x}" for c in ciphers))
    c = ",".join(sorted(f"{e:04x}" for e in extensions if e not in (0, 16)))
    c += "_" + ",".join(f"{s:04x}" for s in sigalgs)
    return f"{a}_{sha12(b)}_{sha12(c)}"


def test_openssl_s_client_against_its_own_trace(clients: RealClients) -> None:
    capture = clients.hello("openssl-trace")
    detection = capture.detection()
    _check_common(detection)
    features = detection.features
    section = _trace_section(capture.output)

    client_version = re.search(r"client_version=0x([0-9a-fA-F]+)", section)
    assert client_version is not None, section
    legacy = int(client_version.group(1), 16)
    pairs = re.findall(r"\{0x([0-9A-F]{2}), 0x([0-9A-F]{2})\}", section)
    ciphers = [int(high + low, 16) for high, low in pairs]
    extensions = _trace_extensions(section)
    by_type = {number: lines for number, _, lines in extensions}

    def numbers(lines: list[str], pattern: str = r"\((\d+)\)$") -> list[int]:
        return [int(m.group(1), 0) for line in lines if (m := re.search(pattern, line))]

    groups = numbers(by_type[10])
    formats = numbers(by_type[11])
    sigalgs = numbers(by_type[13], r"\((0x[0-9a-f]{4})\)$")
    versions = numbers(by_type[43])
    alpn = [line for line in by_type[16] if line]

    # Our parse agrees field by field with OpenSSL's decoding of the same bytes.
    assert features["legacy_version"] == tls.version_name(legacy)
    assert features["cipher_suites"] == ciphers
    assert features["extensions"] == [number for number, _, _ in extensions]
    assert features["supported_groups"] == groups
    assert features["ec_point_formats"] == formats
    assert features["signature_algorithms"] == sigalgs
    assert features["versions"] == [tls.version_name(v) for v in versions]
    assert features["alpn"] == alpn == CLIENT_ALPN

    # JA3 and JA4 computed by hand from the definitions over OpenSSL's lists.
    ja3 = _hand_ja3(legacy, ciphers, [n for n, _, _ in extensions], groups, formats)
    assert features["ja3"] == ja3
    assert features["ja3_hash"] == hashlib.md5(ja3.encode()).hexdigest()
    ja4 = _hand_ja4(versions, True, ciphers, [n for n, _, _ in extensions], alpn[0], sigalgs)
    assert features["ja4"] == ja4

    # -trace changes the printout, not the hello: a plain run fingerprints the same.
    plain = clients.hello("openssl").detection().features
    assert (plain["ja3_hash"], plain["ja4"]) == (features["ja3_hash"], features["ja4"])


@pytest.mark.parametrize("client", ["python", "openssl", "curl"])
def test_real_hello_split_like_the_wire(clients: RealClients, client: str) -> None:
    capture = clients.hello(client)
    whole = capture.detection()
    # Byte by byte, and at the segment boundaries it really arrived in.
    assert feed_in_pieces(tls.inspect, capture.data, list(range(len(capture.data)))) == whole
    cuts = [sum(map(len, capture.chunks[: i + 1])) for i in range(len(capture.chunks))]
    assert feed_in_pieces(tls.inspect, capture.data, cuts) == whole


@pytest.mark.parametrize("client", ["python", "openssl", "curl"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_real_hello_random_splits_and_records(
    clients: RealClients, client: str, data: st.DataObject
) -> None:
    capture = clients.hello(client)
    whole = capture.detection()
    hello = capture.data
    cuts = data.draw(st.lists(st.integers(1, len(hello) - 1), max_size=12), label="cuts")
    assert feed_in_pieces(tls.inspect, hello, cuts) == whole
    # The same handshake cut into several TLS records: same evidence, more records.
    sizes = data.draw(st.lists(st.integers(1, 300), min_size=1, max_size=6), label="records")
    fragmented = refragment(hello, sizes)
    result = feed_in_pieces(tls.inspect, fragmented, cuts)
    assert isinstance(result, Detection)
    expected = dict(whole.features)
    expected["records"] = result.features["records"]
    assert result.features == expected


# --------------------------------------------------------------------------- published vectors


@pytest.mark.parametrize(
    ("record", "ja4", "sni"),
    [
        (CYBERCHEF_JA4_TLS13, "t13d1516h2_8daaf6152771_e5627efa2ab1",
         "content-autofill.googleapis.com"),
        (CYBERCHEF_JA4_TLS12, "t13d1715h2_5b57614c22b0_3d5424432f57",
         "contile.services.mozilla.com"),
    ],
)
def test_published_ja4(record: bytes, ja4: str, sni: str) -> None:
    detection = tls.inspect(record)
    assert isinstance(detection, Detection)
    assert detection.features["ja4"] == ja4
    assert detection.features["sni"] == sni
    assert detection.features["alpn"] == ["h2", "http/1.1"]
    assert detection.features["version"] == "TLS 1.3"
    assert detection.features["legacy_version"] == "TLS 1.2"


def test_published_ja4_raw_lists() -> None:
    """JA4_r of the spec's worked example (JA4.md; FoxIO's rust tls.rs test)."""
    detection = tls.inspect(CYBERCHEF_JA4_TLS13)
    assert isinstance(detection, Detection)
    assert detection.features["ja4_r"] == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
        "_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
        "_0403,0804,0401,0503,0805,0501,0806,0601"
    )
    # GREASE is gone from counts and lists but kept in the raw extension list.
    assert detection.features["cipher_count"] == 15
    assert detection.features["extension_count"] == 16
    assert detection.features["extensions"][0] in tls.GREASE


def test_firefox_sigalgs_come_from_signature_algorithms_only() -> None:
    """Firefox also lists signature schemes in delegated_credentials (0x0022); JA4 ignores those."""
    hello = tls.parse(CYBERCHEF_JA4_TLS12)
    assert isinstance(hello, tls.ClientHello)
    assert 0x0022 in hello.extensions
    assert hello.signature_algorithms[:3] == (0x0403, 0x0503, 0x0603)
    assert tls.ja4_raw(hello).endswith("_0403,0503,0603,0804,0805,0806,0401,0501,0601,0203,0201")


@pytest.mark.parametrize(
    ("record", "ja3_hash"),
    [
        (CYBERCHEF_JA3_TLS10, "503053a0c5b2bd9b9334bf7f3d3b8852"),
        (CYBERCHEF_JA3_TLS13, "4826a90ec2daf4f7b4b64cc1c8bd343b"),
    ],
)
def test_published_ja3_cyberchef(record: bytes, ja3_hash: str) -> None:
    detection = tls.inspect(record)
    assert isinstance(detection, Detection)
    assert detection.features["ja3_hash"] == ja3_hash


def test_draft_tls13_version_has_no_ja4_code() -> None:
    """The CyberChef TLS 1.3 hello offers draft 18 (0x7f12): JA4 writes 00 for unknown versions."""
    detection = tls.inspect(CYBERCHEF_JA3_TLS13)
    assert isinstance(detection, Detection)
    assert detection.features["versions"] == ["0x7f12", "TLS 1.2", "TLS 1.1", "TLS 1.0"]
    assert detection.features["ja4"].startswith("t00d1815h2_")


@pytest.mark.parametrize(
    ("body", "ja3", "ja3_hash"),
    [
        (
            S2N_CHROME_GREASE,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53-10,"
            "0-23-65281-10-11-35-16-5-13-18-51-45-43-27-21,29-23-24,0",
            "66918128f1b9b03303d77c6f2eefd128",
        ),
        (
            S2N_CURL_IPV6,
            "771,4866-4867-4865-49196-49200-159-52393-52392-52394-49195-49199-158-49188-49192-"
            "107-49187-49191-103-49162-49172-57-49161-49171-51-157-156-61-60-53-47-255,"
            "0-11-10-13172-16-22-23-13-43-45-51-21,29-23-30-25-24,0-1-2",
            "456523fc94726331a4d5a2e1d40b2cd7",
        ),
        (
            S2N_OPENSSL_SSL3,
            "768,49172-49162-57-56-136-135-49167-49157-53-132-49170-49160-22-19-49165-49155-10-"
            "49171-49161-51-50-154-153-69-68-49166-49156-47-150-65-7-49169-49159-49164-49154-"
            "5-4-21-18-9-20-17-8-6-3-255,,,",
            None,
        ),
    ],
)
def test_published_ja3_s2n(body: bytes, ja3: str, ja3_hash: str | None) -> None:
    detection = tls.inspect(in_record(body))
    assert isinstance(detection, Detection)
    assert detection.features["ja3"] == ja3
    if ja3_hash is not None:
        assert detection.features["ja3_hash"] == ja3_hash


def test_chrome_72_matches_foxio_reference_output() -> None:
    """FoxIO's snapshot for badcurveball.pcap, a Chrome 72 hello like ja3-rs's capture."""
    detection = tls.inspect(in_record(S2N_CHROME_GREASE))
    assert isinstance(detection, Detection)
    assert detection.features["ja4"] == "t13d1615h2_46e7e9700bed_45f260be83e2"
    assert detection.features["sni"] == "googleads.g.doubleclick.net"


def test_no_extensions_hello() -> None:
    detection = tls.inspect(in_record(S2N_OPENSSL_SSL3, record_version=0x0300))
    assert isinstance(detection, Detection)
    assert detection.features["sni"] is None
    assert detection.features["versions"] == ["SSL 3.0"]
    assert detection.features["ja4"] == "ts3i460000_234845559c90_000000000000"


@pytest.mark.parametrize(
    ("ja3", "md5"),
    [  # The examples in the Salesforce JA3 README.
        ("769,47-53-5-10-49161-49162-49171-49172-50-56-19-4,0-10-11,23-24-25,0",
         "ada70206e40642a3e4461f35503241d5"),
        ("769,4-5-10-9-100-98-3-6-19-18-99,,,", "de350869b8c85de67a350c8d186f11e6"),
    ],
)
def test_ja3_hash_readme_examples(ja3: str, md5: str) -> None:
    assert tls.ja3_hash(ja3) == md5


def test_published_hello_byte_by_byte() -> None:
    whole = tls.inspect(CYBERCHEF_JA4_TLS13)
    every_byte = list(range(len(CYBERCHEF_JA4_TLS13)))
    assert feed_in_pieces(tls.inspect, CYBERCHEF_JA4_TLS13, every_byte) == whole


PUBLISHED = [
    CYBERCHEF_JA4_TLS13,
    CYBERCHEF_JA4_TLS12,
    CYBERCHEF_JA3_TLS10,
    CYBERCHEF_JA3_TLS13,
    in_record(S2N_CHROME_GREASE),
    in_record(S2N_CURL_IPV6),
    in_record(S2N_OPENSSL_SSL3),
]


@settings(max_examples=150, deadline=None)
@given(
    record=st.sampled_from(PUBLISHED),
    cuts=st.lists(st.integers(1, 600), max_size=10),
    sizes=st.lists(st.integers(1, 200), max_size=5),
)
def test_published_hellos_in_random_splits_and_records(
    record: bytes, cuts: list[int], sizes: list[int]
) -> None:
    whole = tls.inspect(record)
    assert isinstance(whole, Detection)
    assert feed_in_pieces(tls.inspect, record, cuts) == whole
    fragmented = refragment(record, sizes) if sizes else record
    result = feed_in_pieces(tls.inspect, fragmented, cuts)
    assert isinstance(result, Detection)
    assert {**result.features, "records": 1} == {**whole.features, "records": 1}
    assert result.features["records"] == count_records(fragmented)


# --------------------------------------------------------------------------- synthetic hellos


def hello_body(
    *,
    version: int = 0x0303,
    session_id: bytes = b"",
    ciphers: tuple[int, ...] = (0x1301, 0xC02F),
    compression: bytes = b"\x00",
    extensions: list[tuple[int, bytes]] | None = None,
) -> bytes:
    body = version.to_bytes(2, "big") + bytes(32) + bytes([len(session_id)]) + session_id
    body += (2 * len(ciphers)).to_bytes(2, "big") + struct.pack(f">{len(ciphers)}H", *ciphers)
    body += bytes([len(compression)]) + compression
    if extensions is not None:
        block = b"".join(
            kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
            for kind, data in extensions
        )
        body += len(block).to_bytes(2, "big") + block
    return body


def alpn_ext(*names: bytes) -> tuple[int, bytes]:
    items = b"".join(bytes([len(n)]) + n for n in names)
    return 0x0010, len(items).to_bytes(2, "big") + items


def sni_ext(name: bytes) -> tuple[int, bytes]:
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    return 0x0000, len(entry).to_bytes(2, "big") + entry


def ja4_of(body: bytes) -> str:
    detection = tls.inspect(in_record(body))
    assert isinstance(detection, Detection)
    return str(detection.features["ja4"])


@pytest.mark.parametrize(
    ("names", "code"),
    [
        ((b"h2", b"http/1.1"), "h2"),
        ((b"http/1.1",), "h1"),
        ((b"h3-29",), "h9"),
        ((b"\xab",), "ab"),  # not alphanumeric: first and last hex digits instead
        ((b"\xab\xcd",), "ad"),
        ((b"0\xab",), "3b"),
        ((b"a",), "aa"),
        ((), "00"),
    ],
)
def test_ja4_alpn_characters(names: tuple[bytes, ...], code: str) -> None:
    extensions = [alpn_ext(*names)] if names else []
    assert ja4_of(hello_body(extensions=extensions))[8:10] == code


def test_ja4_without_signature_algorithms_has_no_trailing_underscore() -> None:
    groups = (0x000A, b"\x00\x02\x00\x1d")
    hello = tls.parse(in_record(hello_body(extensions=[(0x0017, b""), groups])))
    assert isinstance(hello, tls.ClientHello)
    assert tls.ja4_raw(hello) == "t12i020200_1301,c02f_000a,0017"


def test_ja4_counts_cap_at_99() -> None:
    extensions = [(0x1000 + i, b"") for i in range(120)]
    body = hello_body(ciphers=tuple(range(1, 151)), extensions=extensions)
    assert ja4_of(body)[:10] == "t12i999900"


def test_malformed_extension_contents_are_reported_not_fatal() -> None:
    bad_sni = (0x0000, b"\x00\x09\x00\x00\x05abc")  # the name runs past its list
    detection = tls.inspect(in_record(hello_body(extensions=[bad_sni, alpn_ext(b"h2")])))
    assert isinstance(detection, Detection)
    assert detection.confidence < 0.99
    assert detection.features["malformed_extensions"] == [0]
    assert detection.features["sni"] is None
    assert detection.features["alpn"] == ["h2"]


def test_trailing_bytes_after_the_hello_are_ignored() -> None:
    record = in_record(hello_body(extensions=[sni_ext(b"example.org")]))
    early_data = b"\x14\x03\x03\x00\x01\x01" + b"\x17\x03\x03\x00\x05hello"
    assert tls.inspect(record + early_data) == tls.inspect(record)


# --------------------------------------------------------------------------- not TLS


def _noisesocket_frame() -> bytes:
    keypair = DH_FUNCTIONS["25519"].generate_keypair()
    connection = NoiseSocketConnection(True, NoiseSettings(static=keypair))
    connection.send_handshake()
    return connection.data_to_send()


def _corrupt(record: bytes, offset: int, value: bytes) -> bytes:
    return record[:offset] + value + record[offset + len(value) :]


VALID = in_record(hello_body(extensions=[sni_ext(b"example.org"), alpn_ext(b"h2")]))
# Offsets in VALID: record header 0-4, handshake header 5-8, body from 9.
BODY = 9
NOT_TLS = {
    "noisesocket frame": _noisesocket_frame(),
    "wa header and frame": b"WA\x06\x03" + (32).to_bytes(3, "big") + bytes(range(32)),
    "http request": b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
    "ssh banner": b"SSH-2.0-OpenSSH_9.6\r\n",
    "sslv2 hello": b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10",
    "application data record": b"\x17\x03\x03\x00\x10" + bytes(16),
    "alert record": b"\x15\x03\x03\x00\x02\x02\x28",
    "record version 3.5": _corrupt(VALID, 2, b"\x05"),
    "record version 2.1": _corrupt(VALID, 1, b"\x02"),
    "empty record": _corrupt(VALID, 3, b"\x00\x00"),
    "oversized record": _corrupt(VALID, 3, b"\x40\x01"),
    "server hello": _corrupt(VALID, 5, b"\x02"),
    "hello too short": _corrupt(VALID, 6, b"\x00\x00\x20"),
    "hello too long": _corrupt(VALID, 6, b"\x7f\xff\xff"),
    "hello version 2.0": _corrupt(VALID, BODY, b"\x02\x00"),
    "session id of 33": _corrupt(VALID, BODY + 34, b"\x21"),
    "odd cipher vector": _corrupt(VALID, BODY + 35, b"\x00\x03"),
    "empty cipher vector": _corrupt(VALID, BODY + 35, b"\x00\x00"),
    "no null compression": _corrupt(VALID, BODY + 42, b"\x01"),
    "extensions length mismatch": _corrupt(VALID, BODY + 43, b"\x00\x05"),
    "extension past the block": _corrupt(VALID, BODY + 47, b"\x00\xff"),
    "non-handshake record mid-hello": _corrupt(refragment(VALID, [20]), 25, b"\x17"),
}


def test_the_corruptions_hit_what_they_name() -> None:
    assert VALID[BODY + 34] == 0 and VALID[BODY + 35 : BODY + 37] == b"\x00\x04"
    assert VALID[BODY + 41 : BODY + 43] == b"\x01\x00"
    assert VALID[BODY + 45 : BODY + 47] == b"\x00\x00"  # the SNI extension's type
    assert isinstance(tls.inspect(VALID), Detection)


@pytest.mark.parametrize("name", NOT_TLS)
def test_not_tls(name: str) -> None:
    data = NOT_TLS[name]
    assert tls.inspect(data) is None
    with pytest.raises(tls.TLSError):
        tls.parse(data)


@pytest.mark.parametrize("length", [1, 3, 5, 8, 9, 50, len(VALID) - 1])
def test_truncated_hello_needs_more(length: int) -> None:
    assert tls.inspect(VALID[:length]) is NEED_MORE
    assert tls.inspect(CYBERCHEF_JA4_TLS13[: min(length * 7, 516)]) is NEED_MORE


def test_empty_input_needs_more() -> None:
    assert tls.inspect(b"") is NEED_MORE


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1500))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    result = tls.inspect(data)
    assert result is None or result is NEED_MORE or isinstance(result, Detection)
    if data[:1] not in (b"", b"\x16"):
        assert result is None
    with contextlib.suppress(tls.TLSError):
        tls.parse(data)


@settings(max_examples=400, deadline=None)
@given(
    record=st.sampled_from(PUBLISHED),
    edits=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 600),
)
def test_damaged_hellos_never_raise(record: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(record)
    for position, value in edits:
        data[position % len(data)] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        result = tls.inspect(candidate)
        assert result is None or result is NEED_MORE or isinstance(result, Detection)
        with contextlib.suppress(tls.TLSError):
            tls.parse(candidate)


@pytest.mark.parametrize("inspect", [http.inspect, ssh.inspect, noisesocket.inspect, wa.inspect])
def test_other_classifiers_do_not_claim_a_client_hello(
    inspect: Callable[[bytes], InspectResult],
) -> None:
    assert [inspect(record) for record in PUBLISHED] == [None] * len(PUBLISHED)


