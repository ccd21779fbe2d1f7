"""Turn the first bytes of a TCP flow into a :class:`FlowRecord` (sans-IO).

Feed the client's bytes (and the server's, for server-first protocols such as
SSH) as they arrive; the classifier answers as soon as one protocol classifier
is confident, or when none of them can use more bytes, or when the caller
gives up waiting (:meth:`FlowClassifier.finish`) at :meth:`FlowClassifier.deadline`.
A client that sends one byte of a ClientHello and pauses is waited for: once a
first flight has begun, the flow is held for the rest of it up to
:data:`MAX_INSPECT` bytes and ``first_flight_wait`` seconds, unless its first
segment already looks random (the fully-encrypted rule flags it: no protocol
the classifiers know starts like that). The fully-encrypted rule looks only at
the first client segment, as the GFW's did.
"""

from __future__ import annotations

from collections.abc import Callable

from noisewall.censor.classify import fully_encrypted, http, noisesocket, ssh, tls, wa
from noisewall.censor.flowrecord import NEED_MORE, Detection, FlowRecord, InspectResult
from noisewall.records.endpoint import Endpoint

#: Protocol classifiers over client data, in no particular order: the most confident wins.
CLIENT_CLASSIFIERS: tuple[Callable[[bytes], InspectResult], ...] = (
    tls.inspect, http.inspect, ssh.inspect, noisesocket.inspect, wa.inspect,
)
#: Bytes of client data worth inspecting; a ClientHello or a header block fits.
MAX_INSPECT = 16384
#: A detection this confident ends classification at once.
DECISIVE = 0.9
#: Seconds a begun first flight is waited for (from its first bytes) before the
#: flow is decided on what arrived.
FIRST_FLIGHT_WAIT = 10.0


class FlowClassifier:
    """Classifies one flow from its first bytes in each direction."""

    def __init__(self, client: Endpoint, server: Endpoint,
                 first_flight_wait: float = FIRST_FLIGHT_WAIT) -> None:
        self.client = client
        self.server = server
        self.first_flight_wait = first_flight_wait
        self._client_data = b""
        self._first_segment: bytes | None = None
        self._first_at: float | None = None
        self._verdict: fully_encrypted.FullyEncryptedVerdict | None = None
        self._server_data = b""
        self.record: FlowRecord | None = None

    @property
    def decided(self) -> bool:
        """True once the flow has a record."""
        return self.record is not None

    def feed_client(self, data: bytes, now: float = 0.0) -> FlowRecord | None:
        """Add client bytes that arrived at ``now``; the record once decided, else None."""
        if self.record is not None or not data:
            return self.record
        if self._first_segment is None:
            self._first_segment = data
            self._first_at = now
            self._verdict = fully_encrypted.evaluate(data)
        self._client_data = (self._client_data + data)[:MAX_INSPECT]
        detections, waiting = self._run()
        best = max(detections, key=lambda d: d.confidence, default=None)
        if (best is not None and best.confidence >= DECISIVE) or not waiting or (
            len(self._client_data) >= MAX_INSPECT
        ):
            return self._decide(detections)
        return None

    def deadline(self, opened: float, quiet: float) -> float:
        """When to stop waiting for client bytes and call :meth:`finish` (the caller's clock).

        ``quiet`` seconds after ``opened`` if the client has sent nothing (a
        server-first protocol, or an idle client); once it has begun a first
        flight that a classifier is still waiting on, ``first_flight_wait``
        seconds after its first bytes, so that a pause mid-flight does not
        leave the flow unclassified. A first segment that looks random is the
        start of no such flight (a tunnel's): the quiet timeout holds for it.
        """
        if self._first_at is None or self._looks_random:
            return opened + quiet
        return max(opened + quiet, self._first_at + self.first_flight_wait)

    @property
    def _looks_random(self) -> bool:
        return self._verdict is not None and self._verdict.flagged

    def feed_server(self, data: bytes) -> FlowRecord | None:
        """Add server bytes (a server-first banner decides an SSH flow)."""
        if self.record is not None or not data:
            return self.record
        self._server_data = (self._server_data + data)[:MAX_INSPECT]
        banner = ssh.inspect(self._server_data)
        if isinstance(banner, Detection) and not self._client_data:
            return self._decide([banner])
        return None

    def finish(self) -> FlowRecord:
        """Decide on whatever arrived (timeout or end of stream)."""
        if self.record is None:
            detections, _ = self._run()
            server_banner = ssh.inspect(self._server_data) if self._server_data else None
            if isinstance(server_banner, Detection):
                detections.append(server_banner)
            self._decide(detections)
        assert self.record is not None
        return self.record

    def _run(self) -> tuple[list[Detection], bool]:
        detections: list[Detection] = []
        waiting = False
        for inspect in CLIENT_CLASSIFIERS:
            result = inspect(self._client_data)
            if result is NEED_MORE:
                waiting = True
            elif isinstance(result, Detection):
                detections.append(result)
        return detections, waiting

    def _decide(self, detections: list[Detection]) -> FlowRecord:
        record = FlowRecord(self.client, self.server, detections=list(detections))
        best = max(detections, key=lambda d: d.confidence, default=None)
        if best is not None:
            record.protocol, record.confidence = best.protocol, best.confidence
            features = best.features
            record.sni = features.get("sni")
            record.host = features.get("host")
            record.ja3 = features.get("ja3_hash")
            record.ja4 = features.get("ja4")
        verdict = self._verdict
        if verdict is not None:
            record.fully_encrypted = verdict.flagged
            record.exemption = verdict.exemption
            record.popcount = verdict.popcount
        self.record = record
        return record


def classify_flow(
    client: Endpoint,
    server: Endpoint,
    client_data: bytes,
    first_segment: bytes | None = None,
    server_data: bytes = b"",
) -> FlowRecord:
    """Classify a whole captured flow at once (offline use)."""
    classifier = FlowClassifier(client, server)
    if server_data and not client_data:
        classifier.feed_server(server_data)
    if first_segment:
        classifier.feed_client(first_segment)
        rest = client_data[len(first_segment):] if client_data.startswith(first_segment) else b""
        classifier.feed_client(rest)
    else:
        classifier.feed_client(client_data)
    if not classifier.decided and server_data:
        classifier.feed_server(server_data)
    return classifier.finish()
