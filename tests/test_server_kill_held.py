"""R5.4 / R9.6 (issue 10, item 6): the server dies (SIGKILL) while the component holds IMs for a
background device. The component drops a buffer whose session is gone on the promise that its
IMs are in the archive; this proves the promise on a real Prosody (mod_mam, internal storage) and
a real ejabberd (mod_mam on PostgreSQL, the archive for real deployments: docs/operations.md says
why not Mnesia's). Both bridges hand a message to the component only after the archive took it,
so what the component holds is archived before it is held.

Alice's laptop is active, her phone is in the background (CSI); Bob sends five IMs: the laptop
gets them at once, the phone's are held. The server is SIGKILLed at once, started again from the
same config and data; the component reconnects and forgets the dead session's buffer. The phone
logs in again and pages the archive (XEP-0313): all five, each once, in order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import pytest
from lxml import etree

from mdm_harness.clients import ClientPool
from mdm_harness.component_control import ComponentControl
from mdm_harness.environment import online
from mdm_harness.servers import Account
from mdm_harness.servers.base import ServerHandle, reap, start_server, wait_listening
from mdm_harness.waiting import poll_until
from tests.postgres import Postgres, ejabberd_sql_archive

MAM = "urn:xmpp:mam:2"
FORWARD = "urn:xmpp:forward:0"
ACCOUNTS = [Account("alice", "alice-password"), Account("bob", "bob-password")]
N = 5


async def kill(server: ServerHandle) -> None:
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    await reap(server.pid)
    server.pid = None


async def start_again(server: ServerHandle) -> None:
    """Start the killed server again on the same config, ports and data."""
    if server.kind == "prosody":
        exe = shutil.which("prosody")
        assert exe is not None
        with open(server.workdir / "prosody.stderr", "ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                exe, "--config", str(server.workdir / "prosody.cfg.lua"), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        server.pid = proc.pid
    else:
        from mdm_harness.servers.ejabberd import bridge_ebin, launch, wait_started
        assert server.log_file is not None
        # the old log says "is started" already: the new start is told from a fresh log
        server.log_file.rename(server.log_file.with_suffix(".log.before-kill"))
        proc = await launch(server.workdir / "ejabberd.yml", server.workdir, bridge_ebin())
        server.pid = proc.pid
        await wait_started(proc, server.log_file)
    assert server.log_file is not None
    for port in (server.c2s_port, server.component_port):
        await wait_listening(port, proc, server.kind, server.log_file, timeout=60.0)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["prosody", "ejabberd"])
async def test_R5_4_server_sigkill_with_held_ims_loses_none_of_them(tmp_path, kind):
    pg = None
    if kind == "ejabberd":
        from mdm_harness.servers.ejabberd import start_ejabberd
        pg = Postgres()
        try:
            await pg.start()
            server = await start_ejabberd(ACCOUNTS, tmp_path / kind, sql=await ejabberd_sql_archive(pg, "ejabberd"))
        except BaseException:
            pg.stop()
            raise
    else:
        server = await start_server(kind, ACCOUNTS, tmp_path / kind)
    control = ComponentControl(server)
    pool = ClientPool(server, control.sees_inactive)
    again = None
    try:
        await control.start()
        component = control.require()
        laptop = await online(pool, "alice@localhost", "alice-password", "laptop")
        phone = await online(pool, "alice@localhost", "alice-password", "phone")
        bob = await online(pool, "bob@localhost", "bob-password", "desktop", carbons=False)
        await phone.send("<inactive xmlns='urn:xmpp:csi:0'/>")
        await laptop.send("<presence/>")  # R3.1: the laptop is the active client
        await pool.barrier()
        phone.received.clear()
        laptop.received.clear()

        for i in range(N):
            await bob.send(f"<message to='alice@localhost' type='chat' id='held{i}'><body>held {i}</body></message>")

        def laptop_ids() -> list[str]:
            return [el.get("id", "") for el in laptop.received if el.get("id", "").startswith("held")]
        await poll_until(lambda: len(laptop_ids()) == N, 15, "the laptop did not get the IMs")
        assert laptop_ids() == [f"held{i}" for i in range(N)]
        buffer = component.core.buffers.get(phone.full_jid)
        held = [h.delivery.stanza.get("id") for h in buffer.items.values()] if buffer is not None else []
        assert [i for i in held if i and i.startswith("held")] == [f"held{i}" for i in range(N)], held
        assert not [el for el in phone.received if el.get("id", "").startswith("held")]

        connects = component.stats.connects
        await kill(server)
        for c in pool.clients.values():  # their streams died with the server: no reconnects
            c.abandon()
        await start_again(server)

        # The component reconnects and the bridge reports the (empty) session table: the dead
        # phone session's buffer is dropped, its IMs being in the archive.
        await poll_until(lambda: component.stats.connects > connects and component.synced.is_set(), 60,
                         "the component did not reconnect to the restarted server")
        await poll_until(lambda: phone.full_jid not in component.core.buffers, 15,
                         "the dead session's buffer was not let go")

        again = ClientPool(server, control.sees_inactive)
        phone2 = await online(again, "alice@localhost", "alice-password", "phone")
        results: list[etree._Element] = []
        await phone2.send(f"<iq type='set' id='mam1'><query xmlns='{MAM}' queryid='q1'/></iq>")

        def done() -> bool:
            return any(el.tag.endswith("}iq") and el.get("id") == "mam1" for el in phone2.received)
        await poll_until(done, 15, "no archive query result")
        fin = next(el for el in phone2.received if el.tag.endswith("}iq") and el.get("id") == "mam1")
        assert fin.get("type") == "result", etree.tostring(fin)
        for el in phone2.received:
            result = el.find(f"{{{MAM}}}result")
            if result is not None:
                inner = result.find(f"{{{FORWARD}}}forwarded/{{jabber:client}}message")
                if inner is not None and inner.get("id", "").startswith("held"):
                    results.append(inner)
        assert [m.get("id") for m in results] == [f"held{i}" for i in range(N)], \
            f"archive after SIGKILL: {[m.get('id') for m in results]}"
    finally:
        if again is not None:
            await again.close()
        await pool.close()
        await control.stop()
        await server.stop()
        if pg is not None:
            pg.stop()
