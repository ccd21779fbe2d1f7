"""SSH identification string (RFC 4253 section 4.2).

Both sides open with ``SSH-protoversion-softwareversion SP comments CR LF``:
at most 255 bytes with the CR LF, printable US-ASCII, ``protoversion`` ``2.0``
(or ``1.99`` from servers that also speak SSH 1). Software versions are meant
to contain no ``-`` or space, but real ones do (``SSH-2.0-libssh-0.9.6``), so
the software field here runs to the first space. A bare LF ending is accepted,
as OpenSSH does. The RFC lets a server send other lines before its
identification; this classifier, over a client's first bytes, does not.
"""

from __future__ import annotations

import re

from noisewall.censor.flowrecord import NEED_MORE, Detection, InspectResult

PREFIX = b"SSH-"
#: RFC 4253 section 4.2: the identification line is at most 255 bytes with CR LF.
MAX_LINE = 255
_LINE = re.compile(rb"SSH-([0-9]+\.[0-9]+)-([\x21-\x7e]+)(?: ([\x20-\x7e]*))?")
_PROTO = re.compile(rb"[0-9]+\.[0-9]+")
_PROTO_PREFIX = re.compile(rb"[0-9]+(?:\.[0-9]*)?")
_TEXT = re.compile(rb"[\x20-\x7e]*")


def _valid_prefix(line: bytes) -> bool:
    """Whether an unterminated line can still become an identification string."""
    if len(line) <= len(PREFIX):
        return PREFIX.startswith(line)
    if not line.startswith(PREFIX) or not _TEXT.fullmatch(line.rstrip(b"\r")):
        return False
    if line.count(b"\r") > 1 or (b"\r" in line and not line.endswith(b"\r")):
        return False
    proto, dash, rest = line[len(PREFIX) :].rstrip(b"\r").partition(b"-")
    if not dash:
        return _PROTO_PREFIX.fullmatch(proto) is not None and not line.endswith(b"\r")
    if not _PROTO.fullmatch(proto):
        return False
    # The software version is not empty: no space right after the dash, no CR.
    return not rest.startswith(b" ") and not (not rest and line.endswith(b"\r"))


def inspect(data: bytes) -> InspectResult:
    """Classify the first bytes one side sent; never raises."""
    try:
        return _inspect(data)
    except Exception:  # a parser bug must not take the censor down: treat as "not SSH"
        return None


def _inspect(data: bytes) -> InspectResult:
    end = data.find(b"\n", 0, MAX_LINE)
    if end < 0:
        if len(data) >= MAX_LINE or not _valid_prefix(data):
            return None
        return NEED_MORE
    line = data[:end]
    crlf = line.endswith(b"\r")
    match = _LINE.fullmatch(line[:-1] if crlf else line)
    if match is None:
        return None
    proto_version = match.group(1).decode("ascii")
    features = {
        "proto_version": proto_version,
        "software": match.group(2).decode("ascii"),
        "comments": match.group(3).decode("ascii") if match.group(3) is not None else None,
        "banner": line.rstrip(b"\r").decode("ascii"),
        "crlf": crlf,
    }
    # SSH 1 (e.g. 1.5) is still SSH, long obsolete: a weaker verdict.
    confidence = (0.99 if crlf else 0.95) if proto_version in ("2.0", "1.99") else 0.7
    return Detection("ssh", confidence, features)
