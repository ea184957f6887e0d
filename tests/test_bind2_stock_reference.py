"""R9.11 / R9.10: the stock reference for Bind2 phones, i.e. who gets what from the server alone.

Fail-open must give users exactly what the server gives without the component (R9.10), Bind2
phones included, so this is the reference the bridge is held to: the server with its own
carbons and CSI queue and no bridge (Prosody 0.12: mod_carbons + mod_csi_simple + prosody-modules'
mod_sasl2_bind2; ejabberd 24.12, the Debian 13 image: mod_carboncopy + mod_client_state, Bind2
built in; mod_carboncopy is also the reference a cluster is held to, R9.8). A phone that logs in
with SASL2 + Bind2, enabling carbons and choosing <inactive/> (inline on Prosody; ejabberd takes
no CSI inline, so the phone sends the nonza right after), beside a classic laptop:

* every IM to Alice's bare JID reaches both, without our hint (no MDM);
* the phone is woken for each of them: Prosody holds nothing for a session that chose <inactive/>
  inline (mod_sasl2_bind2 sets its state; mod_csi_simple never hears of it), which is what the
  bridge then does too while it does not serve (mdm_bind2.lib.lua, stock_holds); ejabberd's
  mod_client_state queues only unimportant stanzas, never an IM;
* an IM to the laptop's full JID reaches the phone as a <received/> carbon: inline carbons work
  stock (mod_sasl2_bind2 sets want_carbons).

The bridge's side of the same cast is conformance/R9.11-*.scs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from lxml import etree

from mdm_harness.clients import ClientPool
from mdm_harness.environment import DEFAULT_ACCOUNTS, online
from mdm_harness.servers import start_server
from mdm_harness.servers.base import MODULES
from mdm_harness.streamclient import Login
from mdm_harness.waiting import poll_until

NOTIFY = "{urn:x-open-mdm:notify:0}notify"
RECEIVED = "{urn:xmpp:carbons:2}received"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["prosody", "docker-ejabberd-deb13"])
async def test_R9_11_stock_server_gives_a_bind2_phone_stock_carbons_and_every_im(kind):
    workdir = Path(tempfile.mkdtemp(prefix="mdm-bind2-stock-"))
    server = await start_server(kind, DEFAULT_ACCOUNTS, workdir, bridge=False, features=("sasl2",),
                                extra_modules=MODULES[kind]["csi_queue"])
    pool = ClientPool(server)
    try:
        laptop = await online(pool, "alice@localhost", "alice-password", "laptop")
        phone = await pool.connect("phone", "alice@localhost", "alice-password", "phone",
                                   login=Login("bind2", frozenset({"carbons", "inactive"})))
        assert phone.inactive and phone.full_jid.startswith("alice@localhost/phone")  # a Bind2 tag
        await phone.send("<presence/>")
        bob = await online(pool, "bob@localhost", "bob-password", "desktop", carbons=False)
        await pool.barrier()
        for c in (laptop, phone):
            c.received.clear()  # presence echoes

        for i in range(3):
            await bob.send(f"<message to='alice@localhost' type='chat' id='w{i}'><body>hi {i}</body></message>")
        await bob.send(f"<message to='{laptop.full_jid}' type='chat' id='full'><body>to the laptop</body></message>")
        # ejabberd routes the carbon from the laptop's session process to the phone's: the barrier
        # (a ping from the foreground clients, a drained socket for the background phone) can be
        # ahead of it, so wait for the phone's fourth message, then for quiet
        await poll_until(lambda: sum(etree.QName(s).localname == "message" for s in phone.received) >= 4, 5,
                         "the phone did not get 4 messages")
        await pool.barrier()

        # messages only: ejabberd's mod_client_state queues the presences the background phone was
        # sent (unimportant) and lets them out later, with an IM; Prosody sent them at once
        ims = {c.name: [s for s in c.received if etree.QName(s).localname == "message"] for c in (laptop, phone)}
        got = {name: ["message:" + (s.get("id") or "") for s in stanzas] for name, stanzas in ims.items()}
        # 3 of 3 IMs woke the phone (no hold), and the laptop's IM came to it as a carbon
        assert got["phone"] == ["message:w0", "message:w1", "message:w2", "message:"], got
        assert got["alice@localhost/laptop"][:3] == ["message:w0", "message:w1", "message:w2"], got
        assert got["alice@localhost/laptop"][3:] == ["message:full"], got
        carbon = ims["phone"][3].find(RECEIVED)
        assert carbon is not None and carbon.find(".//{jabber:client}message").get("id") == "full"
        assert not any(s.find(NOTIFY) is not None for c in (laptop, phone) for s in c.received)  # no MDM markup
    finally:
        await pool.close()
        await server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
