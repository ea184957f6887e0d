"""Where held stanzas live (R5.4): persisted before the bridge gets the ack, so a component
restart loses nothing. ``Store`` is the interface a cluster database can implement; SQLite is
the embedded default."""

from __future__ import annotations

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


class Store(Protocol):
    def load(self) -> dict[str, list[Held]]: ...
    def apply(self, actions: Iterable[Action]) -> None: ...
    def close(self) -> None: ...


def _key(key: tuple[str, str] | None) -> str | None:
    return None if key is None else "\x1f".join(key)


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash
        self._db.execute("CREATE TABLE IF NOT EXISTS held (id INTEGER PRIMARY KEY, jid TEXT NOT NULL, "
                         "queued_at REAL NOT NULL, coalesce_key TEXT, xml BLOB NOT NULL)")

    def load(self) -> dict[str, list[Held]]:
        out: dict[str, list[Held]] = {}
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        for id_, jid, queued_at, key, xml in self._db.execute(
                "SELECT id, jid, queued_at, coalesce_key, xml FROM held ORDER BY id"):
            stanza = etree.fromstring(xml, parser)
            k = tuple(key.split("\x1f", 1)) if key else None
            out.setdefault(jid, []).append(Held(id_, Deliver(jid, stanza), queued_at, k))  # type: ignore[arg-type]
        return out

    def apply(self, actions: Iterable[Action]) -> None:
        rows, drops = [], []
        for a in actions:
            if isinstance(a, StoreHeld):
                rows.append((a.id, a.jid, a.queued_at, _key(a.key), etree.tostring(render_delivery(a.delivery))))
            elif isinstance(a, DropHeld):
                drops.extend((i,) for i in a.ids)
        if not rows and not drops:
            return
        with self._db:  # one transaction per batch
            self._db.execute("BEGIN")
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?)", rows)
            if drops:
                self._db.executemany("DELETE FROM held WHERE id = ?", drops)

    def close(self) -> None:
        self._db.close()
