"""Device capacity monitoring (R7): session kinds, the node's capacity, the threshold alert.

Sans-I/O like the core: ``CapacityMonitor.update(now, counts)`` takes the time from the caller and
returns what to announce; the component logs it, exports it on /metrics and posts it to the
webhook. Unit tests drive it with a made-up clock.

The model (R7.3, R7.5): a node sized for N users holds 1.5 × N client sessions; in an
active-active HA pair each node counts half of that (its peer may have to take over its users).
Capacity is counted in clients, not users: every session of every kind counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .sessions import Session, SessionTable


@dataclass
class CapacityConfig:
    enabled: bool = True
    sized_users: int = 5000  # R7.3: 5,000 / 15,000 / 25,000 or any number
    ha_pair: bool = False  # active-active high availability: half the capacity per node
    threshold: float = 0.8  # R7.4: share of the capacity
    duration: float = 600.0  # seconds above the threshold before the alert is raised
    repeat: float = 600.0  # seconds between repeats while it holds
    hybrid_users: list[str] = field(default_factory=list)  # R7.1: users bridged to another system
    webhook: str = ""  # optional URL: each alert is POSTed there as JSON

    @property
    def capacity(self) -> int:
        return math.floor(self.sized_users * 1.5 * (0.5 if self.ha_pair else 1.0))

    @property
    def limit(self) -> float:
        return self.capacity * self.threshold


@dataclass(frozen=True)
class SessionCounts:
    """R7.1 on one node."""
    active: int  # logged-in devices
    phantom: int  # kept for a device that is away: XEP-0198 hibernated, XEP-0357 push only
    hybrid: int  # sessions of users bridged to another system
    users: int  # combined: one per user with any session on the node

    @property
    def total(self) -> int:
        return self.active + self.phantom + self.hybrid


def session_kind(s: Session, hybrid_users: set[str] | frozenset[str]) -> str:
    """R7.1: ``hybrid`` (a listed user), ``phantom`` (XEP-0198 hibernated) or ``active``."""
    return "hybrid" if s.user in hybrid_users else "phantom" if s.phantom else "active"


def count_sessions(table: SessionTable, hybrid_users: set[str] | frozenset[str]) -> SessionCounts:
    kinds = {"active": 0, "phantom": 0, "hybrid": 0}
    users: set[str] = set()
    for s in table.all():
        users.add(s.user)
        kinds[session_kind(s, hybrid_users)] += 1
    active, phantom, hybrid = kinds["active"], kinds["phantom"], kinds["hybrid"]
    push_only = table.push_only_users()  # XEP-0357: kept for a user with no live device
    phantom += len(push_only)
    return SessionCounts(active, phantom, hybrid, len(users) + len(push_only))


@dataclass(frozen=True)
class Alert:
    kind: str  # "raised", "repeated" or "cleared"
    sessions: int
    capacity: int
    threshold: float
    above_since: float | None

    def message(self, node: str) -> str:
        share = self.sessions / self.capacity if self.capacity else 0.0
        if self.kind == "cleared":
            return (f"JSMSessionsExceedsThreshold cleared on {node}: {self.sessions} sessions, "
                    f"{share:.0%} of capacity {self.capacity}")
        return (f"JSMSessionsExceedsThreshold {self.kind} on {node}: {self.sessions} sessions, {share:.0%} of "
                f"capacity {self.capacity} (threshold {self.threshold:.0%}); move users to another node or "
                "size this one for more")


class CapacityMonitor:
    def __init__(self, config: CapacityConfig) -> None:
        self.config = config
        self.above_since: float | None = None
        self.alerting = False
        self._last_alert: float | None = None
        self.counts = SessionCounts(0, 0, 0, 0)

    def counters(self) -> dict[str, float]:
        """R7.2, by the vendor's names."""
        return {"JsmClientSessionsActive": self.counts.active,
                "JsmPhantomSessionsActive": self.counts.phantom,
                "JsmHybridSessionsActive": self.counts.hybrid,
                "JSMSessionsExceedsThreshold": 1 if self.alerting else 0}

    def update(self, now: float, counts: SessionCounts) -> Alert | None:
        """R7.4: raised once the sessions stayed above the threshold for the whole duration,
        repeated every ``repeat`` seconds while that holds, cleared when it no longer does."""
        self.counts = counts
        cfg = self.config
        if not cfg.enabled or counts.total <= cfg.limit:
            self.above_since = None
            if self.alerting:
                self.alerting = False
                return Alert("cleared", counts.total, cfg.capacity, cfg.threshold, None)
            return None
        if self.above_since is None:
            self.above_since = now
        if now - self.above_since < cfg.duration:
            return None
        if not self.alerting:
            self.alerting, self._last_alert = True, now
            return Alert("raised", counts.total, cfg.capacity, cfg.threshold, self.above_since)
        if self._last_alert is not None and now - self._last_alert >= cfg.repeat:
            self._last_alert = now
            return Alert("repeated", counts.total, cfg.capacity, cfg.threshold, self.above_since)
        return None
