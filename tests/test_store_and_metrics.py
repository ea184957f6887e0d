"""The SQLite store (R5.4) and the /metrics endpoint (R6)."""

import asyncio

import pytest
from lxml import etree

from mdm.component import Component
from mdm.config import from_dict
from mdm.counters import NAMES
from mdm.events import Deliver, DropHeld, StoreHeld
from mdm.metrics import MetricsServer
from mdm.store import SQLiteStore
from mdm_harness.runner import fetch_metrics

from .helpers import message

MOBILE = "alice@localhost/mobile"


@pytest.mark.asyncio
async def test_R5_4_store_round_trip_keeps_order_stamp_and_key(tmp_path):
    path = tmp_path / "s.sqlite"
    await round_trip(SQLiteStore(path), lambda: SQLiteStore(path))


async def round_trip(store, reopen):
    """The same checks for every Store: order, XEP-0203 stamp, coalescing key, drops."""
    d1 = Deliver(MOBILE, message("alice@localhost", body="one"), False, delay=100.0)
    d2 = Deliver(MOBILE, message("alice@localhost", body="two"), None, delay=101.0)
    await store.apply([StoreHeld(MOBILE, 1, d1, 100.0), StoreHeld(MOBILE, 2, d2, 101.0, ("presence", "b@x/y")),
                       StoreHeld(MOBILE, 3, d2, 102.0)])
    await store.apply([DropHeld(MOBILE, (3,))])
    await store.close()
    again = reopen()
    loaded = (await again.load())[MOBILE]
    await again.close()
    assert [h.id for h in loaded] == [1, 2] and loaded[1].key == ("presence", "b@x/y")
    first = loaded[0].delivery.stanza
    assert first.findtext("{jabber:client}body") == "one"
    assert first.find("{urn:xmpp:delay}delay") is not None
    assert first.find("{urn:x-open-mdm:notify:0}notify").get("value") == "false"


@pytest.mark.asyncio
async def test_R5_4_component_restores_held_stanzas_from_its_store(tmp_path):
    path = tmp_path / "s.sqlite"
    await SQLiteStore(path).apply([StoreHeld(MOBILE, 7, Deliver(MOBILE, message("alice@localhost")), 1.0)])
    cfg = from_dict({"component": {"jid": "mdm.localhost", "secret": "s"}, "buffer": {"store": str(path)}})
    component = Component(cfg)
    await component.load_core()  # at each (re)connect
    assert component.core.held_total == 1 and component.core._next_id == 8
    await component.store.close()


@pytest.mark.asyncio
async def test_metrics_endpoint_serves_the_seven_names_on_localhost():
    values = {n: float(i) for i, n in enumerate(NAMES)}
    server = MetricsServer(lambda: values, "127.0.0.1", 0)
    await server.start()
    try:
        got = await fetch_metrics("127.0.0.1", server.port)
        assert got == values
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /other HTTP/1.1\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 404")
        writer.close()
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_metrics_of_a_component_carry_the_R6_and_R7_names(tmp_path):
    from mdm.component import Component
    from mdm.config import from_dict

    cfg = from_dict({"component": {"jid": "mdm.x", "secret": "s"}, "buffer": {"store": str(tmp_path / "b.sqlite")}})
    component = Component(cfg)
    server = MetricsServer(component.counters, "127.0.0.1", 0)
    await server.start()
    try:
        got = await fetch_metrics("127.0.0.1", server.port)
    finally:
        await server.stop()
        await component.store.close()
    assert set(NAMES) <= set(got)
    assert {"JsmClientSessionsActive", "JsmPhantomSessionsActive", "JsmHybridSessionsActive",
            "JSMSessionsExceedsThreshold"} <= set(got)


class SlowStore:
    """An async store whose writes wait on a gate: a stand-in for PostgreSQL's round trip."""

    def __init__(self, log):
        self.log = log
        self.gate = asyncio.Event()

    async def load(self):
        return {}

    async def apply(self, actions):
        actions = list(actions)
        await self.gate.wait()
        self.log.append(("store", [type(a).__name__ for a in actions]))

    async def close(self):
        pass


class RecordingLink:
    def __init__(self, log):
        self.log = log

    def send(self, stanzas):
        self.log.append(("send", [etree.QName(c).localname for s in stanzas for c in s[0]]))


def events(*items: str) -> etree._Element:
    return etree.fromstring(f"<message xmlns='jabber:component:accept' from='localhost' to='mdm.localhost'>"
                            f"<events xmlns='urn:x-open-mdm:bridge:0'>{''.join(items)}</events></message>")


@pytest.mark.asyncio
async def test_R5_4_R9_9_held_stanzas_are_persisted_before_the_ack_leaves_with_an_async_store(tmp_path):
    log: list = []
    store = SlowStore(log)
    component = Component(from_dict({"component": {"jid": "mdm.localhost", "secret": "s"}}), store=store)
    component._link = RecordingLink(log)
    laptop, mobile = "alice@localhost/laptop", "alice@localhost/mobile"
    component._on_stanza(events(
        f"<bind jid='{laptop}' sid='1'/><carbons jid='{laptop}' enabled='true'/>"
        f"<presence jid='{laptop}' available='true' priority='0'/>",
        f"<bind jid='{mobile}' sid='2'/><carbons jid='{mobile}' enabled='true'/>"
        f"<presence jid='{mobile}' available='true' priority='0'/><csi jid='{mobile}' state='inactive'/>"))
    assert component._outbox == []  # no store action: nothing waits (the hot path)
    component._on_stanza(events("<message-in ref='9'><forwarded xmlns='urn:xmpp:forward:0'>"
                                "<message xmlns='jabber:client' from='bob@localhost/d' to='alice@localhost' "
                                "type='chat'><body>hi</body></message></forwarded></message-in>"))
    assert log == []  # the commands wait for the store write
    commit = asyncio.create_task(component._commit())
    await asyncio.sleep(0)
    assert log == []
    store.gate.set()
    await commit
    assert [kind for kind, _ in log] == ["store", "send"] and log[0][1] == ["StoreHeld"]
    assert set(log[1][1]) & {"ack", "fanout"}  # the answer for ref 9 (fanout acks too)
