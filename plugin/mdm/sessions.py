"""Who is logged in where: sessions per user, MDM clients, RFC 6121 recipients, the active client.

Lookups by full or bare JID are O(1) dict hits; per-user scans touch only that user's few
sessions. Times are plain floats from the caller's clock (the core never reads a clock itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .jid import bare, domain


@dataclass(slots=True)
class Session:
    jid: str
    user: str
    seq: int  # bind order: deliveries go out in a stable order
    carbons: bool = False  # XEP-0280 enabled: an MDM client
    available: bool = False
    priority: int = 0
    last_activity: float | None = None  # R3.1: last available presence or IM sent
    inactive: bool = False  # XEP-0352 CSI: in the background (R3.5, R5.1)
    sid: str | None = None  # the bridge's short id (compact <fanout/> commands)
    client: str | None = None  # XEP-0115 caps node of its presence (device type, R8.3)
    phantom: bool = False  # XEP-0198 hibernated: kept while the device is away (R7.1)
    bound_at: float | None = None  # when the component learnt of it (session report, R8)
    node: str = ""  # the cluster node it lives on (R9.8)

    @property
    def is_mdm(self) -> bool:
        return self.carbons


@dataclass(slots=True)
class User:
    jid: str
    sessions: dict[str, Session] = field(default_factory=dict)  # insertion = bind order


class SessionTable:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._users: dict[str, User] = {}
        self._seq = 0
        self.push_users: set[str] = set()  # XEP-0357 registrations (phantom sessions, R7.1)

    # --- lifecycle ---

    def bind(self, jid: str, sid: str | None = None, node: str = "") -> Session:
        existing = self._sessions.get(jid)
        if existing is not None:  # a re-bind (resync, or a resumption on another node) keeps what we knew
            existing.sid = sid or existing.sid
            existing.node = node
            return existing
        self._seq += 1
        user = self._users.get(bare(jid))
        if user is None:
            user = self._users[bare(jid)] = User(bare(jid))
        session = Session(jid=jid, user=user.jid, seq=self._seq, sid=sid, node=node)
        user.sessions[jid] = session
        self._sessions[jid] = session
        return session

    def unbind(self, jid: str) -> Session | None:
        session = self._sessions.pop(jid, None)
        if session is None:
            return None
        user = self._users[session.user]
        del user.sessions[jid]
        if not user.sessions:
            del self._users[user.jid]
        return session

    def drop_host(self, host: str, node: str = "") -> None:
        """Forget every session of ``host`` on ``node`` (its bridge reconnected and will report
        them again). Push registrations are the host's: every node reports them again."""
        for jid in self.on_node(host, node):
            self.unbind(jid)
        self.push_users = {u for u in self.push_users if domain(u) != host}

    def on_node(self, host: str, node: str) -> list[str]:
        """The sessions of ``host`` that live on cluster node ``node`` (R9.8)."""
        return [s.jid for s in self._sessions.values() if s.node == node and domain(s.jid) == host]

    def push_only_users(self) -> list[str]:
        """Users with a push registration and no live session: one phantom session each (R7.1)."""
        return sorted(u for u in self.push_users if u not in self._users)

    # --- queries ---

    def get(self, jid: str) -> Session | None:
        return self._sessions.get(jid)

    def of_user(self, user: str) -> Iterator[Session]:
        u = self._users.get(user)
        return iter(u.sessions.values()) if u else iter(())

    def __len__(self) -> int:
        return len(self._sessions)

    def all(self) -> Iterator[Session]:
        return iter(self._sessions.values())

    def mdm_sessions(self, user: str) -> list[Session]:
        return [s for s in self.of_user(user) if s.is_mdm]

    def top_resources(self, user: str) -> list[Session]:
        """RFC 6121 §8.5.2.1.1 as Prosody applies it: available sessions of non-negative priority,
        those with the highest priority."""
        candidates = [s for s in self.of_user(user) if s.available and s.priority >= 0]
        if not candidates:
            return []
        top = max(s.priority for s in candidates)
        return [s for s in candidates if s.priority == top]

    def active_client(self, user: str, now: float, window: float) -> Session | None:
        """R3.1: the session that most recently sent available presence or an IM, if that was
        within ``window`` seconds. A session in the background never qualifies, so the next most
        recent one takes over (R3.5); nor does a hibernated one (XEP-0198: its device is away, R5.7).
        None when nobody qualifies (R3.3)."""
        best: Session | None = None
        for s in self.of_user(user):
            t = s.last_activity
            if t is None or s.inactive or s.phantom or now - t > window:
                continue
            if best is None or t > best.last_activity or (t == best.last_activity and s.seq > best.seq):
                best = s
        return best
