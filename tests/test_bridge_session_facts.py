"""What both bridges tell the component about sessions, on real Prosody and ejabberd: phantom
sessions (R7.1: a device that dropped its connection while the server waits for XEP-0198
resumption, or a XEP-0357 push registration with no live device), counted apart
(JsmPhantomSessionsActive); and the caps node that gives the device type (R8.3)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from mdm_harness import aioxmpp_adapter as adapter
from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import DEFAULT_ACCOUNTS, online
from mdm_harness.servers import start_server
from mdm_harness.waiting import poll_until

STREAM_MANAGEMENT = {"prosody": ("smacks",), "ejabberd": ("mod_stream_mgmt",)}


@contextlib.asynccontextmanager
async def live(kind: str, workdir, extra_modules: tuple[str, ...] = ()) -> AsyncIterator[tuple]:
    """A real server with the component and a client pool; everything stopped afterwards."""
    server = await start_server(kind, DEFAULT_ACCOUNTS, workdir, extra_modules=extra_modules)
    control = ComponentControl(server)
    pool = ClientPool(server, control.sees_inactive)
    try:
        await control.start()
        yield server, control, pool
    finally:
        await pool.close()
        await control.stop()
        await server.stop()


async def until(condition, timeout: float = 15.0) -> None:
    await poll_until(condition, timeout, "condition not met in time")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
async def test_R7_1_a_hibernated_session_is_a_phantom_session(kind, tmp_path):
    async with live(kind, tmp_path / kind, STREAM_MANAGEMENT[kind]) as (_server, control, pool):
        await online(pool, "alice@localhost", "alice-password", "laptop")
        phone = await online(pool, "alice@localhost", "alice-password", "phone")
        component = control.require()
        await component.check_capacity()
        assert component.capacity.counters()["JsmClientSessionsActive"] == 2

        adapter.abort(phone._client)  # the phone loses its network
        await until(lambda: (s := component.core.sessions.get(phone.full_jid)) is not None and s.phantom)
        await component.check_capacity()
        counters = component.counters()
        assert counters["JsmClientSessionsActive"] == 1 and counters["JsmPhantomSessionsActive"] == 1
        report = await component.report()
        assert {(r.resource, r.kind) for r in report.sessions} == {("laptop", "active"), ("phone", "phantom")}


PUSH = {"prosody": ("cloud_notify",), "ejabberd": ("mod_push",)}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
async def test_R7_1_a_push_registration_without_a_live_device_is_a_phantom_session(kind, tmp_path):
    async with live(kind, tmp_path / kind, PUSH[kind]) as (_server, control, pool):
        phone = await online(pool, "alice@localhost", "alice-password", "phone")
        reply = await phone.iq("<iq type='set' id='{id}'><enable xmlns='urn:xmpp:push:0' "
                               "jid='push.example.org' node='alice-phone'/></iq>")
        assert reply.get("type") == "result"
        await pool.barrier()
        component = control.require()
        await until(lambda: "alice@localhost" in component.core.sessions.push_users)
        await component.check_capacity()
        assert component.counters()["JsmPhantomSessionsActive"] == 0  # the phone is still online

        await pool.disconnect(phone.name)
        await until(lambda: component.core.sessions.get(phone.full_jid) is None)
        await component.check_capacity()
        counters = component.counters()
        assert counters["JsmPhantomSessionsActive"] == 1 and counters["JsmClientSessionsActive"] == 0

        # a restarted component learns the registration from the bridge's sync
        await control.stop()
        await control.start()
        component = control.require()
        await component.check_capacity()
        assert component.counters()["JsmPhantomSessionsActive"] == 1
        report = await component.report()
        assert [(r.user, r.kind) for r in report.sessions] == [("alice@localhost", "phantom")]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
async def test_R8_3_device_type_from_the_caps_node_the_bridge_relays(kind, tmp_path):
    async with live(kind, tmp_path / kind) as (_server, control, pool):
        client = await pool.connect("c", "alice@localhost", "alice-password", "x1")  # says nothing by name
        await client.send("<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
                          "node='http://conversations.im' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/></presence>")
        await pool.barrier()
        report = await control.require().report()
        assert [(r.resource, r.device) for r in report.sessions] == [("x1", "Android phone")]
        # and a restarted component gets it again from the bridge's sync
        await control.stop()
        await control.start()
        report = await control.require().report()
        assert [(r.resource, r.device) for r in report.sessions] == [("x1", "Android phone")]
