"""What the censor does with one flow's bytes once the policy has spoken (sans-IO).

A :class:`FlowEnforcement` holds one flow's decision and byte counts. The
asyncio code around it (:mod:`noisewall.censor.middlebox`) only moves bytes:
it asks :meth:`FlowEnforcement.start` what to do when the decision arrives,
and :meth:`FlowEnforcement.forward` what to write, when, for each chunk it
reads. Time is passed in (seconds on the caller's monotonic clock); nothing
here reads a clock, sleeps or touches a socket, so every action is tested
with bytes and numbers alone.

Before the decision, bytes pass as they are (a GFW lets packets through
while it inspects): that is how a server-first banner reaches the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from noisewall.censor.policy import Decision
from noisewall.censor.shaping import TokenBucket, kbit_to_bytes

#: The most a flow that does not pass freely (throttled, delayed, stalled, held)
#: reads at a time, and the most its sockets buffer unread each way: the rest
#: waits in the kernel's socket buffers, and TCP's window pushes back on the
#: sender, so such a flow costs kilobytes however fast its peer sends.
SHAPED_READ = 16 * 1024
#: Throttle bursts last 50 ms (at least one packet), which keeps the rate smooth at any scale.
BURST_SECONDS = 0.05
MIN_BURST = 1500.0


class Opening(Enum):
    """What a flow does the moment its decision is known."""

    #: Tear both ends down with TCP RSTs.
    RESET = "reset"
    #: Forward nothing more and leave both ends to time out.
    HOLD = "hold"
    #: Relay, through :meth:`FlowEnforcement.forward`.
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes to write, not before ``due`` (the caller's monotonic seconds)."""

    data: bytes
    due: float


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with bytes just read: write ``chunks`` in order, then hold if ``hold``.

    ``hold`` means: forward nothing more in this direction until the flow closes.
    """

    chunks: tuple[Chunk, ...]
    hold: bool = False


_HOLD = Plan((), hold=True)


class FlowEnforcement:
    """One flow's decision applied to its bytes in both directions.

    ``kernel_relay_after``: once an allowed flow has moved this many bytes
    (both ways), :attr:`to_kernel` turns true: the flow has nothing left to
    inspect and may be relayed by the kernel. ``None`` never hands over.
    """

    def __init__(self, kernel_relay_after: int | None = None) -> None:
        self.decision: Decision | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self._kernel_relay_after = kernel_relay_after
        self._buckets: dict[bool, TokenBucket] = {}

    @property
    def moved(self) -> int:
        """Bytes forwarded so far, both directions."""
        return self.bytes_up + self.bytes_down

    def start(self, decision: Decision) -> Opening:
        """Take the policy's decision; what to do at once."""
        self.decision = decision
        effect = decision.effect
        if effect == "reset":
            return Opening.RESET
        if effect == "drop":
            return Opening.HOLD
        return Opening.RELAY

    @property
    def kernel_eligible(self) -> bool:
        """True if the flow may go to the kernel relay once it is bulk (allowed flows only)."""
        return (self._kernel_relay_after is not None and self.decision is not None
                and self.decision.effect == "allow")

    @property
    def to_kernel(self) -> bool:
        """True once an allowed flow has moved enough to hand it to the kernel."""
        return self.kernel_eligible and self.moved >= (self._kernel_relay_after or 0)

    @property
    def passes_freely(self) -> bool:
        """True once the flow is decided and its bytes pass unshaped (allowed, or DNS-forged)."""
        return self.decision is not None and self.decision.effect in ("allow", "dns")

    def read_size(self, largest: int) -> int:
        """How many bytes to read next: ``largest``, but :data:`SHAPED_READ` once decided shaped."""
        if self.decision is None or self.passes_freely:
            return largest
        return min(largest, SHAPED_READ)

    @property
    def forwards_eof(self) -> bool:
        """Whether one side's end of stream is passed on to the other (not for blocked flows)."""
        return self.decision is None or self.decision.effect not in ("drop", "reset", "stall")

    def count(self, size: int, *, upstream: bool) -> None:
        """Add bytes moved outside :meth:`forward` (the kernel relay)."""
        if upstream:
            self.bytes_up += size
        else:
            self.bytes_down += size

    def forward(self, data: bytes, *, upstream: bool, now: float) -> Plan:
        """What to write for ``data`` read from one side at ``now``; counts what it plans."""
        decision = self.decision
        if decision is None:
            return self._pass(data, upstream, now)
        effect = decision.effect
        if self.passes_freely:  # forged answers are for the DNS forger: TCP passes
            return self._pass(data, upstream, now)
        if effect in ("drop", "reset"):
            return _HOLD
        action = decision.action
        if effect == "delay":
            return self._pass(data, upstream, now + action.ms / 1000)
        if effect == "stall":
            room = action.stall_after_bytes - self.moved
            if room <= 0:
                return _HOLD
            return self._pass(data[:room], upstream, now)
        return self._throttle(data, upstream, now, kbit_to_bytes(action.rate_kbps))

    def _pass(self, data: bytes, upstream: bool, due: float) -> Plan:
        self.count(len(data), upstream=upstream)
        return Plan((Chunk(data, due),))

    def _throttle(self, data: bytes, upstream: bool, now: float, rate: float) -> Plan:
        bucket = self._buckets.get(upstream)
        if bucket is None:
            bucket = TokenBucket(rate, max(MIN_BURST, rate * BURST_SECONDS), now)
            self._buckets[upstream] = bucket
        step = max(1, int(bucket.burst))
        chunks = []
        for offset in range(0, len(data), step):
            piece = data[offset : offset + step]
            chunks.append(Chunk(piece, now + bucket.reserve(len(piece), now)))
        self.count(len(data), upstream=upstream)
        return Plan(tuple(chunks))
