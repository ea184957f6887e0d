"""The user session report (R8): who is logged in, on how many devices, per node, sub-cluster and
cluster; CSV downloads; and which users to move where when nodes are unevenly loaded.

Pure functions over what the nodes published to the shared session directory (mdm.directory):
one ``NodeInfo`` per node (its place in the cluster and its capacity, R7) and one
``SessionRecord`` per session.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .capacity import CapacityConfig, session_kind
from .devices import device_type
from .jid import bare
from .sessions import SessionTable


@dataclass(frozen=True)
class NodeInfo:
    node: str
    redundancy_group: str
    sub_cluster: str
    capacity: int  # sessions (R7.3)
    threshold: float  # share of the capacity (R7.4)
    published_at: float  # seconds since the epoch


@dataclass(frozen=True)
class SessionRecord:
    node: str
    jid: str  # full JID
    device: str  # R8.3: Desktop, iPhone, iPad, Android phone
    kind: str  # active, phantom or hybrid (R7.1)
    since: float | None = None  # seconds since the epoch

    @property
    def user(self) -> str:
        return bare(self.jid)

    @property
    def resource(self) -> str:
        return self.jid.partition("/")[2]


def node_sessions(table: SessionTable, node: str, capacity: CapacityConfig) -> list[SessionRecord]:
    """This node's sessions as report records (the core's times are epoch seconds already)."""
    hybrid = set(capacity.hybrid_users)
    out = []
    for s in table.all():
        out.append(SessionRecord(node, s.jid, device_type(s.jid.partition("/")[2], s.client),
                                 session_kind(s, hybrid), s.bound_at))
    for user in table.push_only_users():  # a push registration and no live device (R7.1)
        out.append(SessionRecord(node, f"{user}/(push)", "Unknown", "phantom"))
    return out


def node_info(node: str, group: str, sub_cluster: str, capacity: CapacityConfig, now: float) -> NodeInfo:
    return NodeInfo(node, group, sub_cluster, capacity.capacity, capacity.threshold, now)


@dataclass
class Row:
    """One line of the report at any level (R8.1)."""
    level: str  # cluster, sub-cluster or node
    name: str
    redundancy_group: str
    nodes: list[str]
    users: int  # users logged in from one or more devices
    sessions: int
    capacity: int
    threshold: float
    generated_at: str
    devices: dict[str, int] = field(default_factory=dict)

    @property
    def load(self) -> float:
        return self.sessions / self.capacity if self.capacity else 0.0

    @property
    def above_threshold(self) -> bool:
        return self.capacity > 0 and self.sessions > self.capacity * self.threshold


@dataclass
class Report:
    generated_at: str
    cluster: Row
    sub_clusters: list[Row]
    nodes: list[Row]
    sessions: list[SessionRecord]
    moves: list[Move]


@dataclass(frozen=True)
class Move:
    """Going beyond the seed (which says users cannot be balanced): move ``users`` users from an
    over-threshold node to the node with the most room."""
    source: str
    target: str
    users: int
    sessions: int


def _row(level: str, name: str, infos: list[NodeInfo], records: list[SessionRecord], generated: str) -> Row:
    groups = sorted({i.redundancy_group for i in infos})
    devices: dict[str, int] = {}
    for r in records:
        devices[r.device] = devices.get(r.device, 0) + 1
    capacity = sum(i.capacity for i in infos)
    threshold = (sum(i.threshold * i.capacity for i in infos) / capacity) if capacity else 0.8
    return Row(level, name, ", ".join(groups), [i.node for i in infos], len({r.user for r in records}),
               len(records), capacity, threshold, generated, devices)


def build(infos: Iterable[NodeInfo], records: Iterable[SessionRecord], now: float, cluster: str = "cluster") -> Report:
    infos = sorted(infos, key=lambda i: (i.sub_cluster, i.node))
    records = sorted(records, key=lambda r: (r.node, r.user, r.jid))
    generated = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_node: dict[str, list[SessionRecord]] = {i.node: [] for i in infos}
    for r in records:
        by_node.setdefault(r.node, []).append(r)
    node_rows = [_row("node", i.node, [i], by_node[i.node], generated) for i in infos]
    subs: dict[str, list[NodeInfo]] = {}
    for i in infos:
        subs.setdefault(i.sub_cluster, []).append(i)
    sub_rows = [_row("sub-cluster", name, members, [r for m in members for r in by_node[m.node]], generated)
                for name, members in subs.items()]
    return Report(generated, _row("cluster", cluster, infos, records, generated), sub_rows, node_rows, records,
                  rebalance(node_rows))


def rebalance(nodes: list[Row]) -> list[Move]:
    """For each node above its threshold, how many users to move, and to which node, so that every
    node ends near the cluster's average load (sessions / capacity). Users move with all their
    sessions: counts use the node's average sessions per user."""
    total_capacity = sum(n.capacity for n in nodes)
    if total_capacity == 0:
        return []
    average = sum(n.sessions for n in nodes) / total_capacity
    room = {n.name: n.capacity * min(average, n.threshold) - n.sessions for n in nodes}
    moves = []
    for n in sorted(nodes, key=lambda n: -n.load):
        if not n.above_threshold or n.users == 0:
            continue
        per_user = n.sessions / n.users
        excess = n.sessions - n.capacity * min(average, n.threshold)
        while excess > 0:
            target = max(room, key=room.get)
            if target == n.name or room[target] < per_user:
                break
            sessions = min(excess, room[target])
            users = max(1, round(sessions / per_user))
            moves.append(Move(n.name, target, users, round(users * per_user)))
            room[target] -= users * per_user
            excess -= users * per_user
    return moves


# --- CSV (R8.2) ---------------------------------------------------------------------------

def safe_cell(value: object) -> str:
    """No formula injection: a spreadsheet must not run a cell that starts like a formula
    (a resource name is chosen by the client)."""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv(header: list[str], rows: Iterable[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return out.getvalue()


LEVEL_HEADER = ["level", "name", "redundancy group", "nodes", "users logged in (1+ devices)", "total sessions",
                "capacity", "generated at"]


def summary_csv(report: Report, level: str) -> str:
    rows = {"cluster": [report.cluster], "sub-cluster": report.sub_clusters, "node": report.nodes}[level]
    return _csv(LEVEL_HEADER, ([r.level, r.name, r.redundancy_group, " ".join(r.nodes), r.users, r.sessions,
                                r.capacity, r.generated_at] for r in rows))


def users_csv(report: Report, node: str) -> str:
    """R8.2, R8.3: per node, one line per session: the user, the device type, the session kind."""
    def since(r: SessionRecord) -> str:
        return datetime.fromtimestamp(r.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if r.since else ""
    return _csv(["node", "user", "resource", "device type", "session kind", "since", "generated at"],
                ([r.node, r.user, r.resource, r.device, r.kind, since(r), report.generated_at]
                 for r in report.sessions if r.node == node))


__all__ = ["NodeInfo", "SessionRecord", "Report", "Row", "Move", "build", "rebalance", "summary_csv", "users_csv",
           "safe_cell", "node_sessions", "node_info"]
