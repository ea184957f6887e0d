"""What the component knows right now, as the admin API's JSON (``/status.json`` and
``/sessions.json?user=``): whether it serves, which bridges reported their sessions (R9.8), the
live settings (R1.2), and one user's devices as the core sees them: which is active (R3.1), in
the background (R3.5), hibernated (R5.7), how much is held for it (R5), whether the user has a
push registration (R3.6).

For an admin asking why a phone buzzed or stayed silent, and for the conformance harness, which
waits on this view when the component runs as a process or container of its own (issue 16)."""

from __future__ import annotations

from typing import Any

from .config import Config, live_values
from .core import MdmCore


def status(config: Config, core: MdmCore, *, active: bool, connected: bool) -> dict[str, Any]:
    return {
        "node": config.node,
        "jid": config.jid,
        "active": active,  # serving: connected, and holding the HA lock if there is one (R9.9)
        "connected": connected,
        "synced": {host: sorted(nodes) for host, nodes in sorted(core.synced.items())},
        "sessions": len(core.sessions),
        "held": core.held_total,
        "config": live_values(config),
    }


def user_sessions(config: Config, core: MdmCore, user: str, now: float, *, connected: bool) -> dict[str, Any]:
    active = core.sessions.active_client(user, now, config.core.active_window)
    return {
        "user": user,
        "connected": connected,  # the view is live only while the link is up
        "push": user in core.sessions.push_users,
        "sessions": [{
            "jid": s.jid,
            "node": s.node,
            "mdm": s.is_mdm,
            "available": s.available,
            "priority": s.priority,
            "active": active is s,
            "inactive": s.inactive,
            "phantom": s.phantom,
            "client": s.client,
            "held": len(core.buffers[s.jid]) if s.jid in core.buffers else 0,
        } for s in core.sessions.of_user(user)],
    }
