"""The R6 counters, with the vendor's exact names.

Gauges (MDMSessions, MDMSilentModeSessions, MDMQuietModeSessions) are computed from the session
table when read; the flush counters are kept here. MDMBufferFlushPacketCount and
MDMBufferAvgQueuedTime cover the last ``period`` seconds (a sliding window).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

NAMES = ("MDMSessions", "MDMSilentModeSessions", "MDMQuietModeSessions", "MDMBufferFlushes",
         "MDMBufferFlushesLimitReached", "MDMBufferFlushPacketCount", "MDMBufferAvgQueuedTime")


@dataclass
class FlushCounters:
    period: float = 60.0
    flushes: int = 0
    flushes_limit_reached: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    # (time of flush, stanzas flushed, total seconds they waited)
    _recent: deque[tuple[float, int, float]] = field(default_factory=deque)

    def record(self, now: float, reason: str, waits: list[float], total_limit: bool) -> None:
        self.flushes += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if total_limit:
            self.flushes_limit_reached += 1
        self._recent.append((now, len(waits), sum(waits)))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0][0] > self.period:
            self._recent.popleft()

    def window(self, now: float) -> tuple[int, float]:
        """Stanzas flushed in the last period, and their average wait in seconds."""
        self._trim(now)
        packets = sum(n for _, n, _ in self._recent)
        waited = sum(w for _, _, w in self._recent)
        return packets, (waited / packets if packets else 0.0)
