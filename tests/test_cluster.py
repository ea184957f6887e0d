"""R9.8 / R9.9 on ejabberd: the bridge's view of the component cannot race a quick reconnect, and a
cluster node that dies takes its sessions out of the component's view (its bridge never says
goodbye). The conformance suite runs on the cluster as well (tests/test_conformance.py with
--mdm-server ejabberd-cluster); these are the faults a scenario cannot script."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import pytest
import yaml
from lxml import etree

from mdm.component import Component
from mdm.config import from_dict
from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import DEFAULT_ACCOUNTS, MdmEnvironment
from mdm_harness.ports import free_ports
from mdm_harness.runner import run_scenario
from mdm_harness.scenario import load_scenarios
from mdm_harness.servers import ejabberd
from mdm_harness.servers.base import cluster_nodes, wait_listening
from mdm_harness.waiting import poll_until

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
BODY = "{jabber:client}body"


def hint(stanza: etree._Element) -> str | None:
    el = stanza.find(NOTIFY)
    return None if el is None else el.get("value")


async def im(env: MdmEnvironment, sender, text: str, *devices) -> None:
    """Bob's IM to Alice's bare JID; until each of ``devices`` holds it, then a barrier (so nothing
    more is on its way). On a cluster a delivery to a device on the other node crosses both nodes'
    bridges, a longer way than the barrier's iq reply takes: the barrier alone may come first."""
    await sender.send(f"<message to='alice@localhost' type='chat' id='{text}'><body>{text}</body></message>")
    await poll_until(lambda: all(any(s.get("id") == text for s in d.received) for d in devices), 15,
                     f"{text} did not reach every device")
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
            await im(env, bob, f"flap{i}", laptop, mobile)
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
        await im(env, bob, "before", laptop, mobile)
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
            await im(env, bob, f"after{i}", laptop)
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
            await im(env, bob, "two", laptop, mobile)
            got = [laptop.received.pop(0), mobile.received.pop(0)]
            assert [hint(s) for s in got] == ["false", "true"]  # served by MDM, the mobile active
            # one instance has every session of both nodes, the other none
            counts = sorted([len(first.core.sessions), len(second.core.sessions)])
            assert counts == [0, 3], counts

            await env.component.crash()
            await poll_until(lambda: {"ej1@localhost", "ej2@localhost"} <= second.core.synced.get("localhost", set()),
                             15, "not every node paired with the remaining connection")
            await im(env, bob, "after", laptop, mobile)
            got = [laptop.received.pop(0), mobile.received.pop(0)]
            assert [s.findtext(BODY) for s in got] == ["after", "after"]
            assert [hint(s) for s in got] == ["false", "true"]
            assert not laptop.received and not mobile.received
        finally:
            await second.stop()
            await task


async def _decoy_component(host: str, port: int, domain: str, secret: str) -> asyncio.StreamWriter:
    """A bare XEP-0114 component that logs in as ``domain`` and answers every iq it is sent (the
    route it shares with our component gets it some of the harness's barrier iqs)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' "
                 f"to='{domain}'>".encode())
    head = b""
    while b"id=" not in head or b">" not in head.split(b"id=", 1)[1]:
        head += await asyncio.wait_for(reader.read(4096), 10)
    stream_id = head.split(b"id=", 1)[1][1:].split(head.split(b"id=", 1)[1][:1], 1)[0].decode()
    writer.write(f"<handshake>{hashlib.sha1((stream_id + secret).encode()).hexdigest()}</handshake>".encode())
    answer = b""
    while b"handshake" not in answer:
        answer += await asyncio.wait_for(reader.read(4096), 10)
    assert b"error" not in answer, answer

    async def answer_iqs() -> None:
        buf = b""
        while data := await reader.read(65536):
            buf += data
            for m in re.finditer(rb"<iq [^>]*>", buf):
                attrs = dict(re.findall(rb"(\w+)=['\"]([^'\"]*)['\"]", m.group(0)))
                if attrs.get(b"type") in (b"get", b"set"):
                    writer.write(b"<iq type='result' id='" + attrs.get(b"id", b"") + b"' from='" + attrs.get(b"to", b"")
                                 + b"' to='" + attrs.get(b"from", b"") + b"'/>")
            buf = buf[buf.rfind(b">") + 1:]
    writer.decoy_task = asyncio.create_task(answer_iqs())  # type: ignore[attr-defined]
    return writer


@pytest.mark.asyncio
async def test_R9_8_another_component_on_the_same_listener_is_not_taken_for_ours(tmp_path):
    """ejabberd registers every host of a component listener (sharing its password) for whichever
    component logs in there: a second component on the MDM component's listener also gets a route
    to mdm.<domain>. Connected first (a lower pid), it must still not be taken for ours: the
    bridge pairs only with the connection that authenticated as the MDM component."""
    cfg = yaml.safe_load(ejabberd.render_config(*free_ports(3), ack_timeout=2.0))
    (service,) = [lst for lst in cfg["listen"] if lst["module"] == "ejabberd_service"]
    service["hosts"]["decoy.localhost"] = {"password": ejabberd.SECRET}
    (c2s,) = [lst for lst in cfg["listen"] if lst["module"] == "ejabberd_c2s"]
    (http,) = [lst for lst in cfg["listen"] if lst["module"] == "ejabberd_http"]
    workdir = tmp_path / "ejabberd"
    workdir.mkdir()
    (workdir / "ejabberd.yml").write_text(yaml.safe_dump(cfg))
    proc = await ejabberd.launch(workdir / "ejabberd.yml", workdir, ejabberd.bridge_ebin())
    server = ejabberd.EjabberdHandle("ejabberd", "localhost", c2s["port"], service["port"], "mdm.localhost",
                                     ejabberd.SECRET, "conference.localhost", workdir, proc.pid,
                                     workdir / "ejabberd.log", list(DEFAULT_ACCOUNTS), http_port=http["port"])
    decoy = None
    try:
        await ejabberd.wait_started(proc, workdir / "ejabberd.log")
        for port in (http["port"], c2s["port"], service["port"]):
            await wait_listening(port, proc, "ejabberd", workdir / "ejabberd.log", timeout=60)
        await server.register(DEFAULT_ACCOUNTS)
        decoy = await _decoy_component(server.host, server.component_port, "decoy.localhost", ejabberd.SECRET)
        env = MdmEnvironment("ejabberd", DEFAULT_ACCOUNTS)
        env.server = server
        env.component = ComponentControl(server)
        await env.component.start()  # waits for the bridge's <sync/>: it reached our component
        env.pool = ClientPool(server, env.component.sees_inactive)
        laptop = await env.online("alice@localhost", "alice-password", "laptop")
        mobile = await env.online("alice@localhost", "alice-password", "mobile")
        bob = await env.online("bob@localhost", "bob-password", "desktop", carbons=False)
        await bob.send("<message to='alice@localhost' type='chat' id='ours'><body>ours</body></message>")
        got = [await laptop.next_stanza(), await mobile.next_stanza()]
        # served by MDM (the hints), not failed open after the bridge's 2 s timeout
        assert [s is not None and hint(s) for s in got] == ["false", "true"], got
        assert "did not answer" not in server.log_tail(200)
        await env.pool.close()
        await env.component.stop()
    finally:
        if decoy is not None:
            decoy.decoy_task.cancel()  # type: ignore[attr-defined]
            decoy.close()
        await server.stop()


@pytest.mark.asyncio
async def test_R9_8_three_node_cluster_plays_the_flow_walkthrough(monkeypatch):
    """The cluster's size is a setting (MDM_CLUSTER_NODES, mdm-harness run --cluster-nodes): on three
    nodes Alice's laptop, her mobile, Bob and Colin each sit on another node than the one before,
    and the R10 flow walkthrough holds as on one node (R9.8)."""
    monkeypatch.setenv("MDM_CLUSTER_NODES", "3")
    (scenario,) = load_scenarios([Path(__file__).parent.parent / "conformance" / "R10-flow-walkthrough.scs"])
    lines: list[str] = []
    result = await run_scenario(scenario, "ejabberd-cluster", lines.append)
    assert result.passed, "\n".join(lines)
    assert result.steps_run == len(scenario.for_server("ejabberd-cluster").steps)


def test_cluster_size_setting_is_checked(monkeypatch):
    monkeypatch.delenv("MDM_CLUSTER_NODES", raising=False)
    assert cluster_nodes() == 2
    monkeypatch.setenv("MDM_CLUSTER_NODES", "3")
    assert cluster_nodes() == 3
    for bad in ("1", "two", ""):
        monkeypatch.setenv("MDM_CLUSTER_NODES", bad)
        with pytest.raises(ValueError, match="MDM_CLUSTER_NODES"):
            cluster_nodes()
