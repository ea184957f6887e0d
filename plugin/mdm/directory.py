"""The shared session directory (R8): each component instance publishes its node's sessions, so
one report covers the cluster.

``SessionDirectory`` is the interface; ``SQLiteDirectory`` is the embedded default for a single
node (a file beside the buffer store), ``PostgresDirectory`` (asyncpg) the one for several nodes
sharing a database. A node replaces its whole entry at each publication, in one transaction, so
readers never see half of a node.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Protocol

from .report import NodeInfo, SessionRecord


class SessionDirectory(Protocol):
    async def publish(self, info: NodeInfo, sessions: list[SessionRecord]) -> None: ...
    async def read(self) -> tuple[list[NodeInfo], list[SessionRecord]]: ...
    async def close(self) -> None: ...


_NODE_COLUMNS = "node, redundancy_group, sub_cluster, capacity, threshold, published_at"
_SESSION_COLUMNS = "node, jid, device, kind, since"


class SQLiteDirectory:
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS mdm_nodes (node TEXT PRIMARY KEY, redundancy_group TEXT NOT NULL,
                sub_cluster TEXT NOT NULL, capacity INTEGER NOT NULL, threshold REAL NOT NULL,
                published_at REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS mdm_sessions (node TEXT NOT NULL, jid TEXT NOT NULL, device TEXT NOT NULL,
                kind TEXT NOT NULL, since REAL, PRIMARY KEY (node, jid));
        """)
        self._lock = asyncio.Lock()

    async def publish(self, info: NodeInfo, sessions: list[SessionRecord]) -> None:
        async with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.execute("DELETE FROM mdm_sessions WHERE node = ?", (info.node,))
                db.execute(f"INSERT OR REPLACE INTO mdm_nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                           (info.node, info.redundancy_group, info.sub_cluster, info.capacity, info.threshold,
                            info.published_at))
                db.executemany(f"INSERT OR REPLACE INTO mdm_sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                               [(s.node, s.jid, s.device, s.kind, s.since) for s in sessions])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    async def read(self) -> tuple[list[NodeInfo], list[SessionRecord]]:
        async with self._lock:
            nodes = [NodeInfo(*row) for row in self._db.execute(f"SELECT {_NODE_COLUMNS} FROM mdm_nodes")]
            sessions = [SessionRecord(*row) for row in self._db.execute(f"SELECT {_SESSION_COLUMNS} FROM mdm_sessions")]
        return nodes, sessions

    async def close(self) -> None:
        self._db.close()


class PostgresDirectory:
    """Several nodes, one PostgreSQL database (asyncpg)."""

    def __init__(self, pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str) -> PostgresDirectory:
        import asyncpg
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        async with pool.acquire() as conn:
            await conn.execute("""
                CREATE TABLE IF NOT EXISTS mdm_nodes (node TEXT PRIMARY KEY, redundancy_group TEXT NOT NULL,
                    sub_cluster TEXT NOT NULL, capacity INTEGER NOT NULL, threshold DOUBLE PRECISION NOT NULL,
                    published_at DOUBLE PRECISION NOT NULL);
                CREATE TABLE IF NOT EXISTS mdm_sessions (node TEXT NOT NULL, jid TEXT NOT NULL, device TEXT NOT NULL,
                    kind TEXT NOT NULL, since DOUBLE PRECISION, PRIMARY KEY (node, jid));
            """)
        return cls(pool)

    async def publish(self, info: NodeInfo, sessions: list[SessionRecord]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM mdm_sessions WHERE node = $1", info.node)
            await conn.execute(
                f"INSERT INTO mdm_nodes ({_NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (node) DO UPDATE SET redundancy_group = EXCLUDED.redundancy_group, "
                "sub_cluster = EXCLUDED.sub_cluster, capacity = EXCLUDED.capacity, "
                "threshold = EXCLUDED.threshold, published_at = EXCLUDED.published_at",
                info.node, info.redundancy_group, info.sub_cluster, info.capacity, info.threshold,
                info.published_at)
            await conn.executemany(f"INSERT INTO mdm_sessions ({_SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5)",
                                   [(s.node, s.jid, s.device, s.kind, s.since) for s in sessions])

    async def read(self) -> tuple[list[NodeInfo], list[SessionRecord]]:
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            nodes = [NodeInfo(*r) for r in await conn.fetch(f"SELECT {_NODE_COLUMNS} FROM mdm_nodes")]
            sessions = [SessionRecord(*r) for r in await conn.fetch(f"SELECT {_SESSION_COLUMNS} FROM mdm_sessions")]
        return nodes, sessions

    async def close(self) -> None:
        await self._pool.close()


async def open_directory(url: str) -> SessionDirectory:
    """``postgresql://…`` for a shared PostgreSQL, anything else is a SQLite file path."""
    if url.startswith(("postgresql://", "postgres://")):
        return await PostgresDirectory.connect(url)
    return SQLiteDirectory(url)
