"""R9.8 / R9.9 on ejabberd: the bridge's view of the component cannot race a quick reconnect, and a
cluster node that dies takes its sessions out of the component's view (its bridge never says
goodbye). The conformance suite runs on the cluster as well (tests/test_conformance.py with
--mdm-server ejabberd-cluster); these are the faults a scenario cannot script."""

from __future__ import annotations

import asyncio

import pytest
from lxml import etree

from mdm.component import Component
from mdm.config import from_dict
from mdm_harness.environment import DEFAULT_ACCOUNTS, MdmEnvironment
from mdm_harness.waiting import poll_until

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
BODY = "{jabber:client}body"


def hint(stanza: etree._Element) -> str | None:
    el = stanza.find(NOTIFY)
    return None if el is None else el.get("value")


async def im(env: MdmEnvironment, sender, text: str) -> None:
    await sender.send(f"<message to='alice@localhost' type='chat' id='{text}'><body>{text}</body></message>")
    await env.settle()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["ejabberd", "ejabberd-cluster"])
async def test_R9_9_link_flaps_never_leave_mdm_off(kind):
    """30 quick reconnects of the component (the old connection's end may reach ejabberd after the
    new one's start): after each, the bridges pair with the new connection, and an IM is served
    by MDM (hinted) on every device, exactly once."""
    async with MdmEnvironment(kind, DEFAULT_ACCOUNTS) as env:
        laptop = await env.online("alice@localhost", "alice-password", "laptop")
        mobile = await env.online("alice@localhost", "alice-password", "mobile")
        bob = await env.online("bob@localhost", "bob-password", "desktop", carbons=False)
        assert env.component is not None
        for i in range(30):
            await env.component.crash()  # the socket is cut, nothing more is answered
            await env.component.start()  # waits until every node's bridge reported its sessions
            await im(env, bob, f"flap{i}")
            got = [laptop.received.pop(0), mobile.received.pop(0)]
            assert [s.findtext(BODY) for s in got] == [f"flap{i}"] * 2, f"flap {i}: {got}"
            # MDM served it: the mobile (not the active client) gets it silently (R3.2)
            assert [hint(s) for s in got] == ["false", "true"] or [hint(s) for s in got] == ["true", "false"], \
                f"flap {i}: not served by MDM: {[etree.tostring(s) for s in got]}"
            assert not laptop.received and not mobile.received  # R2.4: once
        assert env.component.require().stats.connects == 1  # each start() is a fresh Component


@pytest.mark.asyncio
async def test_R9_8_node_down_takes_its_sessions_out():
    """SIGKILL of the node holding alice's mobile: the surviving node's bridge tells the component,
    which forgets the mobile (no unbind hook ever runs for it); the laptop on the other node keeps
    getting every IM, once, with the hint of the active client."""
    async with MdmEnvironment("ejabberd-cluster", DEFAULT_ACCOUNTS) as env:
        assert env.server is not None and env.component is not None and env.pool is not None
        # round-robin placement: laptop on node 1 (where the component is connected), mobile on node 2
        laptop = await env.online("alice@localhost", "alice-password", "laptop")
        mobile = await env.online("alice@localhost", "alice-password", "mobile")
        bob = await env.online("bob@localhost", "bob-password", "desktop", carbons=False)
        component = env.component.require()
        mobile_jid = mobile.full_jid
        assert component.core.sessions.get(mobile_jid).node == "ej2@localhost"
        await im(env, bob, "before")
        assert {s.findtext(BODY) for s in (laptop.received.pop(0), mobile.received.pop(0))} == {"before"}

        del env.pool.clients[mobile.name]  # its node is about to vanish under it
        await env.server.kill_node(1)  # type: ignore[attr-defined]
        await poll_until(lambda: component.core.sessions.get(mobile_jid) is None, 15,
                         "the component still lists the dead node's session")
        assert component.counters()["MDMSessions"] == 1  # laptop only

        await laptop.send("<presence/>")  # the laptop is (still) the active client
        await env.settle()
        laptop.received.clear()
        for i in range(5):
            await im(env, bob, f"after{i}")
        got = [laptop.received.pop(0) for _ in range(5)]
        assert [s.findtext(BODY) for s in got] == [f"after{i}" for i in range(5)]
        assert {hint(s) for s in got} == {"true"}
        assert not laptop.received
        await mobile.disconnect()


@pytest.mark.asyncio
async def test_R9_8_two_connections_for_one_component_jid_every_node_pairs_with_the_same_one():
    """ejabberd accepts two connections for one component JID (one per node here, no HA lock).
    Every node's bridge pairs with the same one, so one instance sees all of alice's devices;
    when it dies, every node pairs with the other, which then gets every node's sessions."""
    async with MdmEnvironment("ejabberd-cluster", DEFAULT_ACCOUNTS) as env:
        assert env.server is not None and env.component is not None
        laptop = await env.online("alice@localhost", "alice-password", "laptop")  # node 1
        mobile = await env.online("alice@localhost", "alice-password", "mobile")  # node 2
        bob = await env.online("bob@localhost", "bob-password", "desktop", carbons=False)
        first = env.component.require()

        second_settings = {k: dict(v) for k, v in env.component.settings.items()}
        second_settings["component"]["server_port"] = env.server.component_ports[1]  # type: ignore[attr-defined]
        second_settings["buffer"]["store"] = str(env.server.workdir / "second.sqlite")
        second_settings["metrics"]["port"] = 0
        second_settings["admin"]["port"] = 0
        second = Component(from_dict(second_settings))
        task = asyncio.create_task(second.run())
        try:
            await asyncio.wait_for(second.connected.wait(), 15)
            await im(env, bob, "two")
            got = [laptop.received.pop(0), mobile.received.pop(0)]
            assert [hint(s) for s in got] == ["false", "true"]  # served by MDM, the mobile active
            # one instance has every session of both nodes, the other none
            counts = sorted([len(first.core.sessions), len(second.core.sessions)])
            assert counts == [0, 3], counts

            await env.component.crash()
            await poll_until(lambda: {"ej1@localhost", "ej2@localhost"} <= second.core.synced.get("localhost", set()),
                             15, "not every node paired with the remaining connection")
            await im(env, bob, "after")
            got = [laptop.received.pop(0), mobile.received.pop(0)]
            assert [s.findtext(BODY) for s in got] == ["after", "after"]
            assert [hint(s) for s in got] == ["false", "true"]
            assert not laptop.received and not mobile.received
        finally:
            await second.stop()
            await task
