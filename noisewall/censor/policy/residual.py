"""Residual censorship: after a hit, the same client -> server:port stays blocked a while."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from noisewall.censor.flowrecord import FlowRecord
from noisewall.censor.policy.actions import Action

#: Default bound on live residual entries.
DEFAULT_RESIDUAL_ENTRIES = 65536




ResidualKey: TypeAlias = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class ResidualEntry:
    """A live residual block: until when, which rule, which action."""

    expires: float
    rule: str
    action: Action


class ResidualTable:
    """Residual censorship state: (client IP, server IP, server port) -> block until.

    Bounded: when full, expired entries are purged, then the oldest live ones
    are evicted (one eighth of the table at a time).
    """

    def __init__(self, max_entries: int = DEFAULT_RESIDUAL_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a residual table holds at least one entry")
        self.max_entries = max_entries
        self._entries: dict[ResidualKey, ResidualEntry] = {}

    @staticmethod
    def key(flow: FlowRecord) -> ResidualKey:
        """The residual key of a flow."""
        return flow.client.host, flow.server.host, flow.server.port

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: ResidualKey, now: float) -> ResidualEntry | None:
        """The live entry for ``key`` at ``now``, if any (an expired one is removed)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            return None
        return entry

    def add(self, key: ResidualKey, now: float, seconds: float, rule: str, action: Action) -> None:
        """Block ``key`` with ``action`` from ``now`` for ``seconds``."""
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= self.max_entries:
            self.purge(now)
            target = self.max_entries - max(1, self.max_entries // 8)
            while len(entries) > target:
                del entries[next(iter(entries))]
        entries[key] = ResidualEntry(now + seconds, rule, action)

    def purge(self, now: float) -> int:
        """Remove entries expired at ``now``; returns how many."""
        dead = [key for key, entry in self._entries.items() if now >= entry.expires]
        for key in dead:
            del self._entries[key]
        return len(dead)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def snapshot(self) -> dict[ResidualKey, ResidualEntry]:
        """A copy of the entries (live or not yet purged)."""
        return dict(self._entries)
