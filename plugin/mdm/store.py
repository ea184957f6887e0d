"""Where held stanzas live (R5.4, R9.9): persisted before the bridge gets the ack, so a component
restart loses nothing, and a standby instance that takes over restores them.

``Store`` is the interface (async, so a network database fits behind it). ``SQLiteStore`` is the
embedded single-node default; ``PostgresStore`` (asyncpg) is the shared store of an HA pair: the
instances of one component JID keep their held stanzas in one table, keyed by that JID, and the
instance that becomes active loads them (R9.9). ``open_store`` picks one from ``buffer.store``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from lxml import etree

from .bridge_protocol import render_delivery
from .buffers import Held
from .events import Action, Deliver, DropHeld, StoreHeld

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store could not read or write: nothing was acknowledged on its behalf."""


class Store(Protocol):
    async def load(self) -> dict[str, list[Held]]: ...
    async def apply(self, actions: Iterable[Action]) -> None: ...
    async def close(self) -> None: ...


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


def open_store(location: str, component_jid: str) -> Store:
    """``buffer.store``: a postgresql:// URL (shared by an HA pair) or a SQLite file path."""
    if is_postgres(location):
        return PostgresStore(location, component_jid)
    return SQLiteStore(location)


def _key(key: tuple[str, str] | None) -> str | None:
    return None if key is None else "\x1f".join(key)


def _rows(actions: Iterable[Action]) -> tuple[list[tuple], list[int]]:
    rows: list[tuple] = []
    drops: list[int] = []
    for a in actions:
        if isinstance(a, StoreHeld):
            rows.append((a.id, a.jid, a.queued_at, _key(a.key), etree.tostring(render_delivery(a.delivery))))
        elif isinstance(a, DropHeld):
            drops.extend(a.ids)
    return rows, drops


def _held(rows: Iterable[tuple]) -> dict[str, list[Held]]:
    out: dict[str, list[Held]] = {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for id_, jid, queued_at, key, xml in rows:
        stanza = etree.fromstring(bytes(xml), parser)
        k = tuple(key.split("\x1f", 1)) if key else None
        out.setdefault(jid, []).append(Held(id_, Deliver(jid, stanza), queued_at, k))  # type: ignore[arg-type]
    return out


class SQLiteStore:
    """One file, one process: its calls are fast and synchronous, wrapped in the async interface."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        self._db.execute("CREATE TABLE IF NOT EXISTS held (id INTEGER PRIMARY KEY, jid TEXT NOT NULL, "
                         "queued_at REAL NOT NULL, coalesce_key TEXT, xml BLOB NOT NULL)")

    async def load(self) -> dict[str, list[Held]]:
        return _held(self._db.execute("SELECT id, jid, queued_at, coalesce_key, xml FROM held ORDER BY id"))

    async def apply(self, actions: Iterable[Action]) -> None:
        rows, drops = _rows(actions)
        if not rows and not drops:
            return
        with self._db:  # one transaction per batch
            self._db.execute("BEGIN")
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?)", rows)
            if drops:
                self._db.executemany("DELETE FROM held WHERE id = ?", [(i,) for i in drops])

    async def close(self) -> None:
        self._db.close()


_CREATE = """CREATE TABLE IF NOT EXISTS mdm_held (component TEXT NOT NULL, id BIGINT NOT NULL,
    jid TEXT NOT NULL, queued_at DOUBLE PRECISION NOT NULL, coalesce_key TEXT, xml BYTEA NOT NULL,
    PRIMARY KEY (component, id))"""


class PostgresStore:
    """The shared store of an HA pair (R9.9): one table, rows keyed by (component JID, id).

    One connection, opened on first use and again after it was lost (each ``load`` at a
    (re)connect checks it). A failed write raises ``StoreError``: the component then drops its
    link before anything is acknowledged, and the bridges deliver natively (fail-open, R9.6).
    """

    def __init__(self, dsn: str, component_jid: str, *, timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.component = component_jid
        self.timeout = timeout
        self._conn = None

    async def _connection(self):
        import asyncpg
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        self._conn = None
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
            try:
                with contextlib.suppress(asyncpg.exceptions.UniqueViolationError):
                    await conn.execute(_CREATE)  # (the other instance may create it at the same moment)
            except BaseException:
                conn.terminate()
                raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            raise StoreError(f"buffer.store {_safe(self.dsn)} unreachable: {e or type(e).__name__}") from e
        self._conn = conn
        return conn

    async def load(self) -> dict[str, list[Held]]:
        import asyncpg
        conn = await self._connection()
        try:
            rows = await conn.fetch("SELECT id, jid, queued_at, coalesce_key, xml FROM mdm_held "
                                    "WHERE component = $1 ORDER BY id", self.component, timeout=self.timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            await self._drop()
            raise StoreError(f"buffer.store: loading held stanzas failed: {e or type(e).__name__}") from e
        return _held(tuple(r) for r in rows)

    async def apply(self, actions: Iterable[Action]) -> None:
        import asyncpg
        rows, drops = _rows(actions)
        if not rows and not drops:
            return
        conn = await self._connection()
        try:
            async with conn.transaction():  # one transaction per batch
                if rows:
                    await conn.executemany(
                        "INSERT INTO mdm_held (component, id, jid, queued_at, coalesce_key, xml) "
                        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (component, id) DO UPDATE SET "
                        "jid = EXCLUDED.jid, queued_at = EXCLUDED.queued_at, "
                        "coalesce_key = EXCLUDED.coalesce_key, xml = EXCLUDED.xml",
                        [(self.component, *r) for r in rows], timeout=self.timeout)
                if drops:
                    await conn.execute("DELETE FROM mdm_held WHERE component = $1 AND id = ANY($2::bigint[])",
                                       self.component, drops, timeout=self.timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            await self._drop()
            raise StoreError(f"buffer.store: write failed: {e or type(e).__name__}") from e

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing a broken connection: nothing more to do
                conn.terminate()


def _safe(dsn: str) -> str:
    """A DSN for log lines: without its password."""
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    userinfo, host = rest.rsplit("@", 1)
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{host}"
