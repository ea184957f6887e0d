"""R9.9 building blocks on a real PostgreSQL: the shared store of an HA pair (R5.4 across
instances) and the advisory lock that keeps one instance active, freed at once when its holder's
session ends. Config keys of [ha] and component.servers."""

import asyncio
import signal

import pytest

from mdm.config import ConfigError, from_dict
from mdm.events import Deliver, StoreHeld
from mdm.ha import ActiveLock, lock_key
from mdm.store import PostgresStore

from .helpers import message
from .test_store_and_metrics import MOBILE, round_trip


@pytest.mark.asyncio
async def test_R9_9_postgres_store_round_trip_and_per_component_rows(postgres):
    await round_trip(PostgresStore(postgres.dsn, "mdm.localhost"),
                     lambda: PostgresStore(postgres.dsn, "mdm.localhost"))
    other = PostgresStore(postgres.dsn, "mdm.other")  # another component's pair shares the database
    assert await other.load() == {}
    await other.apply([StoreHeld(MOBILE, 1, Deliver(MOBILE, message("alice@localhost")), 1.0)])
    # the standby of mdm.localhost sees its own rows only
    standby = PostgresStore(postgres.dsn, "mdm.localhost")
    assert [h.id for h in (await standby.load())[MOBILE]] == [1, 2]
    await standby.close()
    await other.close()


@pytest.mark.asyncio
async def test_R9_9_lock_one_holder_the_next_takes_over_when_its_session_ends(postgres):
    first = ActiveLock(postgres.dsn, "mdm.localhost", heartbeat=0.2)
    second = ActiveLock(postgres.dsn, "mdm.localhost", heartbeat=0.2)
    other = ActiveLock(postgres.dsn, "mdm.other")  # another JID: another key, no contention
    assert lock_key("mdm.localhost") != lock_key("mdm.other")
    assert await first.acquire() is False  # free: taken at once
    assert await other.acquire() is False
    waiting = asyncio.create_task(second.acquire())
    done, _ = await asyncio.wait({waiting}, timeout=0.5)  # a bounded check that it does wait
    assert not done and second.held is False
    first._conn.terminate()  # the holder's session ends, as when its process is SIGKILLed
    assert await asyncio.wait_for(first.lost.wait(), 10) is True  # fencing signal for the holder
    assert await asyncio.wait_for(waiting, 10) is True  # it waited, then took over
    assert second.held and not second.lost.is_set()
    for lock in (first, second, other):
        await lock.release()


@pytest.mark.asyncio
async def test_R9_9_lock_holder_is_fenced_when_postgresql_goes_away(postgres):
    lock = ActiveLock(postgres.dsn, "mdm.localhost", heartbeat=0.2)
    await lock.acquire()
    postgres.proc.send_signal(signal.SIGINT)  # fast shutdown: sessions are ended, not waited for
    await asyncio.wait_for(lock.lost.wait(), 10)
    assert not lock.held
    await lock.release()


def test_R9_9_config_servers_and_ha_lock():
    base = {"component": {"jid": "mdm.x", "secret": "s"}}
    cfg = from_dict({**base, "buffer": {"store": "postgresql://mdm@db/mdm"}})
    assert cfg.ha_lock == "postgresql://mdm@db/mdm"  # a shared store: the lock is on by default
    assert cfg.directory == "postgresql://mdm@db/mdm"
    assert from_dict(base).ha_lock == ""  # SQLite: one instance, no lock
    assert from_dict(base).server_addresses() == [("127.0.0.1", 5347)]
    cfg = from_dict({"component": {"jid": "mdm.x", "secret": "s",
                                   "servers": ["127.0.0.1:5347", "[::1]:5348", "node-b:5347"]}})
    assert cfg.server_addresses() == [("127.0.0.1", 5347), ("::1", 5348), ("node-b", 5347)]
    with pytest.raises(ConfigError, match="component.servers"):
        from_dict({"component": {"jid": "mdm.x", "secret": "s", "servers": ["nohost"]}})
    with pytest.raises(ConfigError, match="ha.lock needs a shared buffer.store"):
        from_dict({**base, "ha": {"lock": "postgresql://mdm@db/mdm"}})
    with pytest.raises(ConfigError, match="ha.lock"):
        from_dict({**base, "buffer": {"store": "postgresql://mdm@db/mdm"}, "ha": {"lock": "/tmp/x"}})
    with pytest.raises(ConfigError, match="ha.heartbeat"):
        from_dict({**base, "ha": {"heartbeat": 0}})
