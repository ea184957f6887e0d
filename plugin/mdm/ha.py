"""One active instance, standbys that take over (R9.9).

Several ``mdm-component`` processes run with the same component JID, secret and shared store
(``buffer.store = "postgresql://…"``); only the one holding a PostgreSQL *advisory lock* connects
to the server. The lock's key is derived from the component JID, so one database can serve the
pairs of several components.

* ``pg_advisory_lock`` waits until the holder's database session ends, so a standby takes over as
  soon as the active process dies: a SIGKILLed holder's connection closes, and PostgreSQL frees
  its locks at once.
* The holder watches its lock connection (a termination listener and a heartbeat query). When it
  is lost, another instance may be taking over: ``lost`` is set and the component drops its XMPP
  link at once (fencing) before it goes back to waiting. The session sets TCP keepalives, so a
  holder that vanished without closing its socket (a network cut) frees the lock within ~10 s.
* Both servers need this: ejabberd accepts two components with the same JID (each node's bridge
  would then pair with its own), Prosody refuses the second with a conflict.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

log = logging.getLogger(__name__)

# Per-session settings, so PostgreSQL notices a holder whose host went silent.
_KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
              "application_name": "mdm-component"}


def lock_key(component_jid: str) -> int:
    """A signed 64-bit advisory lock key for this component JID."""
    digest = hashlib.sha256(b"open-mdm/active/" + component_jid.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ActiveLock:
    """``await acquire()`` returns once this instance is the active one; ``lost`` is set when
    that may no longer be true; ``release()`` ends the lock's session."""

    def __init__(self, dsn: str, component_jid: str, *, heartbeat: float = 1.0) -> None:
        self.dsn = dsn
        self.key = lock_key(component_jid)
        self.heartbeat = heartbeat
        self.lost = asyncio.Event()
        self.held = False
        self._conn = None
        self._watch: asyncio.Task[None] | None = None

    async def acquire(self) -> bool:
        """Wait for the lock. Returns True at once if it was free, False if another instance held
        it and we waited (the caller logs "standby" for that). Raises OSError-like errors of
        asyncpg when PostgreSQL is unreachable (the caller retries)."""
        import asyncpg
        await self.release()
        self.lost.clear()
        conn = await asyncpg.connect(self.dsn, timeout=10, server_settings=_KEEPALIVE)
        try:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                waited = False
            else:
                log.info("standby: another instance is active; waiting for the HA lock")
                await conn.fetchval("SELECT pg_advisory_lock($1)", self.key, timeout=None)
                waited = True
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self.held = True
        conn.add_termination_listener(lambda _c: self._on_lost("its database connection closed"))
        self._watch = asyncio.get_running_loop().create_task(self._heartbeat(conn))
        return waited

    def _on_lost(self, why: str) -> None:
        if self.held and not self.lost.is_set():
            log.error("lost the HA lock (%s): dropping the link, another instance may take over", why)
            self.lost.set()
        self.held = False

    async def _heartbeat(self, conn) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(self.heartbeat)
            try:
                await conn.fetchval("SELECT 1", timeout=max(self.heartbeat * 2, 1.0))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure means we can no longer vouch for the lock
                self._on_lost(f"heartbeat failed: {e or type(e).__name__}")
                conn.terminate()
                return

    async def release(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        conn, self._conn = self._conn, None
        self.held = False
        if conn is not None:
            try:  # closing the session frees the lock
                await asyncio.wait_for(conn.close(), 5)
            except Exception:  # noqa: BLE001
                conn.terminate()
