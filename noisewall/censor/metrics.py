"""The censor's Prometheus metrics (the standard ``prometheus_client`` library)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

from noisewall.records.endpoint import Endpoint


class CensorMetrics:
    """Counters of decided flows and relayed bytes, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._flows = Counter(
            "noisewall_censor_flows",
            "Flows decided, by detected protocol, action and policy rule.",
            ["protocol", "action", "rule"],
            registry=self.registry,
        )
        self._bytes = Counter(
            "noisewall_censor_bytes",
            "Bytes relayed, by direction.",
            ["direction"],
            registry=self.registry,
        )

    def flow(self, protocol: str, action: str, rule: str) -> None:
        """Count one decided flow."""
        self._flows.labels(protocol, action, rule).inc()

    def bytes(self, upstream: bool, size: int) -> None:
        """Count relayed bytes."""
        self._bytes.labels("upstream" if upstream else "downstream").inc(size)

    def serve(self, host: str, port: int) -> Endpoint:
        """Expose ``/metrics`` over HTTP on host:port (a background thread); port 0 picks one."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        bound_host, bound_port = server.server_address[:2]
        return Endpoint(str(bound_host), int(bound_port))
